package diagnostics

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable prints r for a person: one row per check (name, ok, detail,
// fix) and a last line saying whether everything is ok. `make verify` and
// the demo page print exactly this.
func WriteTable(w io.Writer, r Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tOK\tDETAIL\tFIX")
	failed := 0
	for _, c := range r.Checks {
		ok := "ok"
		if !c.OK {
			ok = "FAIL"
			failed++
		}
		fix := c.Fix
		if fix == "" {
			fix = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", oneLine(c.Name), ok, oneLine(c.Detail), oneLine(fix))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	at := r.CheckedAt.UTC().Format(time.RFC3339)
	var err error
	if r.OK {
		_, err = fmt.Fprintf(w, "\nAll %d checks ok (checked at %s).\n", len(r.Checks), at)
	} else {
		_, err = fmt.Fprintf(w, "\n%d of %d checks failed (checked at %s): see FIX.\n", failed, len(r.Checks), at)
	}
	return err
}

// oneLine keeps a cell on its row: tabs and line breaks would break the
// table.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
