package config

import "errors"

// Err joins every problem, or nil: for tests. The handler reads Problems
// (the start-up log names each one; Missing gates the routes).
func (c Config) Err() error {
	if len(c.Problems) == 0 {
		return nil
	}
	errs := make([]error, len(c.Problems))
	for i, p := range c.Problems {
		errs[i] = errors.New(p.String())
	}
	return errors.Join(errs...)
}
