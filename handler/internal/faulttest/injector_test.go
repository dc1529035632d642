package faulttest

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The injector's own behaviour, against a plain httptest server: no Azurite.

type backend struct {
	srv  *httptest.Server
	hits atomic.Int64
}

func newBackend(t *testing.T) *backend {
	t.Helper()
	b := &backend{}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		_, _ = io.WriteString(w, `{"ok":true,"refresh_token":"rt"}`)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func injectorClient(t *testing.T, b *backend, timeout time.Duration) (*Injector, *http.Client) {
	t.Helper()
	in := New(http.DefaultTransport.(*http.Transport).Clone())
	if err := in.Route(b.srv.URL, Microsoft); err != nil {
		t.Fatal(err)
	}
	return in, &http.Client{Transport: in, Timeout: timeout}
}

func get(t *testing.T, c *http.Client, u string) (int, string, error) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func TestInjectorAfterAndTimes(t *testing.T) {
	b := newBackend(t)
	in, c := injectorClient(t, b, 5*time.Second)
	r := in.Add(&Rule{Dependency: Microsoft, Match: PathSuffix("/token"), After: 2, Times: 2, Fault: Status(503, nil, []byte("busy"))})
	var got []int
	for range 6 {
		st, _, err := get(t, c, b.srv.URL+"/x/token")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, st)
	}
	want := []int{200, 200, 503, 503, 200, 200}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("statuses %v, want %v", got, want)
		}
	}
	if st, _, _ := get(t, c, b.srv.URL+"/other"); st != 200 {
		t.Errorf("a request the rule does not match got %d", st)
	}
	if r.Injected() != 2 || b.hits.Load() != 5 || in.Requests(Microsoft) != 7 {
		t.Errorf("injected %d, backend hits %d, requests %d; want 2, 5, 7", r.Injected(), b.hits.Load(), in.Requests(Microsoft))
	}
}

func TestInjectorUnroutedHostIsUnknownAndUntouched(t *testing.T) {
	b := newBackend(t)
	in := New(http.DefaultTransport)
	in.Add(&Rule{Dependency: Microsoft, Fault: Reset()})
	c := &http.Client{Transport: in}
	if st, _, err := get(t, c, b.srv.URL); err != nil || st != 200 {
		t.Fatalf("unrouted host: %d, %v", st, err)
	}
	if in.Requests(Unknown) != 1 {
		t.Errorf("Requests(Unknown) = %d, want 1", in.Requests(Unknown))
	}
}

func TestInjectorResets(t *testing.T) {
	for _, tc := range []struct {
		name     string
		fault    Fault
		wantHits int64
	}{
		{"before the dependency", Reset(), 0},
		{"after the dependency acted", ResetAfterForward(), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t)
			in, c := injectorClient(t, b, 5*time.Second)
			in.Add(&Rule{Dependency: Microsoft, Fault: tc.fault})
			_, _, err := get(t, c, b.srv.URL)
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("err = %v, want ECONNRESET", err)
			}
			if b.hits.Load() != tc.wantHits {
				t.Errorf("backend hits %d, want %d", b.hits.Load(), tc.wantHits)
			}
		})
	}
}

func TestInjectorHangEndsWithTheClientTimeoutOrClear(t *testing.T) {
	b := newBackend(t)
	in, c := injectorClient(t, b, 200*time.Millisecond)
	in.Add(&Rule{Dependency: Microsoft, Fault: HangAfterForward()})
	_, _, err := get(t, c, b.srv.URL)
	var te interface{ Timeout() bool }
	if !errors.As(err, &te) || !te.Timeout() {
		t.Errorf("err = %v, want a client timeout", err)
	}
	if b.hits.Load() != 1 {
		t.Errorf("backend hits %d, want 1 (forwarded, then the answer withheld)", b.hits.Load())
	}

	in, c = injectorClient(t, b, 0) // no timeout: only Clear ends it
	in.Add(&Rule{Dependency: Microsoft, Fault: Hang()})
	errc := make(chan error, 1)
	go func() {
		_, _, err := get(t, c, b.srv.URL)
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	in.Clear()
	select {
	case err := <-errc:
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("released request: %v, want ECONNRESET", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Clear did not release the held request")
	}
	if st, _, err := get(t, c, b.srv.URL); err != nil || st != 200 {
		t.Errorf("after Clear: %d, %v", st, err)
	}
}

func TestInjectorBodies(t *testing.T) {
	b := newBackend(t)
	in, c := injectorClient(t, b, 5*time.Second)

	var read atomic.Int64
	in.Add(&Rule{Dependency: Microsoft, Times: 1, Fault: Large(200, nil, 10<<20, &read)})
	resp, err := c.Get(b.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, io.LimitReader(resp.Body, 1000))
	resp.Body.Close()
	if n != 1000 || read.Load() > 1000+32<<10 || resp.ContentLength != 10<<20 {
		t.Errorf("read %d, counted %d, length %d", n, read.Load(), resp.ContentLength)
	}

	in.Add(&Rule{Dependency: Microsoft, Times: 1, Fault: Truncated(200, nil, []byte(`{"access_token":"abc"}`), 5)})
	if _, body, err := get(t, c, b.srv.URL); !errors.Is(err, syscall.ECONNRESET) || body != `{"acc` {
		t.Errorf("truncated: body %q, err %v", body, err)
	}

	in.Add(&Rule{Dependency: Microsoft, Times: 1, Fault: Rewrite(func(_ int, body []byte) []byte { return body[:5] })})
	if st, body, err := get(t, c, b.srv.URL); err != nil || st != 200 || body != `{"ok"` || b.hits.Load() != 1 {
		t.Errorf("rewrite: %d %q %v (backend hits %d)", st, body, err, b.hits.Load())
	}
}
