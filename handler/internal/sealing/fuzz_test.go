package sealing

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fuzzAAD is the additional data the seed corpus was sealed with.
const fuzzAAD = "connections|42|microsoft|RefreshTokenSealed"

// FuzzOpen feeds arbitrary text to Open and KeyVersion. Neither may panic;
// every failure must be one of the typed errors; KeyVersion and Open must
// agree on what is malformed; and anything that opens must be a ciphertext
// the fuzz keyring really sealed. The seed corpus (testdata/fuzz/FuzzOpen)
// holds valid ciphertexts for keys k1 and k2, so mutations start close to
// the real format.
func FuzzOpen(f *testing.F) {
	f.Add("", []byte(nil))
	f.Add("v1.k1.", []byte(fuzzAAD))
	keys := &testKeyring{keys: map[string][]byte{"k1": testKey(1), "k2": testKey(2)}, current: "k1"}
	s := New(keys)
	f.Fuzz(func(t *testing.T, sealed string, aad []byte) {
		ctx := context.Background()
		plaintext, err := s.Open(ctx, sealed, aad)
		version, verr := KeyVersion(sealed)

		if errors.Is(err, ErrMalformed) != errors.Is(verr, ErrMalformed) {
			t.Fatalf("Open and KeyVersion disagree on %q: %v / %v", sealed, err, verr)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrOpen) && !errors.Is(err, errUnknownVersion) {
				t.Fatalf("Open(%q): untyped error %v", sealed, err)
			}
			if plaintext != nil {
				t.Fatalf("Open(%q) returned plaintext with an error", sealed)
			}
			return
		}
		if version != "k1" && version != "k2" {
			t.Fatalf("Open(%q) succeeded with version %q", sealed, version)
		}
		// Whatever opened must seal and open again under the same aad.
		again, err := s.Seal(ctx, plaintext, aad)
		if err != nil {
			t.Fatalf("Seal: %v", err)
		}
		back, err := s.Open(ctx, again, aad)
		if err != nil || !bytes.Equal(back, plaintext) {
			t.Fatalf("round trip of opened plaintext: %q, %v", back, err)
		}
	})
}

// TestFuzzCorpusOpens keeps the seed corpus honest: the valid-* seeds must
// still open (so the fuzzer starts from the success path), the others must
// not. A change of format or of the test keys shows up here, not as a
// silently useless corpus.
func TestFuzzCorpusOpens(t *testing.T) {
	keys := &testKeyring{keys: map[string][]byte{"k1": testKey(1), "k2": testKey(2)}, current: "k1"}
	s := New(keys)
	entries, err := os.ReadDir(filepath.Join("testdata", "fuzz", "FuzzOpen"))
	if err != nil {
		t.Fatal(err)
	}
	valid := 0
	for _, e := range entries {
		sealed, aad := readSeed(t, filepath.Join("testdata", "fuzz", "FuzzOpen", e.Name()))
		_, err := s.Open(context.Background(), sealed, aad)
		if want := strings.HasPrefix(e.Name(), "valid-"); (err == nil) != want {
			t.Errorf("seed %s: Open err = %v, want success %t", e.Name(), err, want)
		}
		if err == nil {
			valid++
		}
	}
	if valid < 2 {
		t.Errorf("only %d valid seeds; the corpus must hold valid ciphertexts", valid)
	}
}

// readSeed parses a "go test fuzz v1" file holding (string, []byte).
func readSeed(t *testing.T, path string) (string, []byte) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) != 3 || lines[0] != "go test fuzz v1" {
		t.Fatalf("%s: not a (string, []byte) corpus file", path)
	}
	unquote := func(line, typ string) string {
		inner, ok := strings.CutPrefix(line, typ+"(")
		inner, ok2 := strings.CutSuffix(inner, ")")
		if !ok || !ok2 {
			t.Fatalf("%s: %q is not %s(...)", path, line, typ)
		}
		s, err := strconv.Unquote(inner)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return s
	}
	return unquote(lines[1], "string"), []byte(unquote(lines[2], "[]byte"))
}
