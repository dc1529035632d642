package tokens

// Wait waits for the background work without ending it.
func (s *Service) Wait() { s.bg.Wait() }
