package connection

import "testing"

func TestIsGUID(t *testing.T) {
	for s, want := range map[string]bool{
		"72f988bf-86f1-41af-91ab-2d7cd011db47":   true,
		"72F988BF-86F1-41AF-91AB-2D7CD011DB47":   true,
		"common":                                 false,
		"contoso.onmicrosoft.com":                false,
		"72f988bf86f141af91ab2d7cd011db47":       false,
		"{72f988bf-86f1-41af-91ab-2d7cd011db47}": false,
		"72f988bf-86f1-41af-91ab-2d7cd011db47\n": false,
		"72f988bf-86f1-41af-91ab-2d7cd011db4g":   false,
	} {
		if got := IsGUID(s); got != want {
			t.Errorf("IsGUID(%q) = %v, want %v", s, got, want)
		}
	}
}
