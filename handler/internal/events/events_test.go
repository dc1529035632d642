package events

import (
	"bytes"
	"crypto/rand"
	"errors"
	"regexp"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

var at = time.Date(2026, 11, 25, 23, 35, 0, 0, time.UTC)

func TestEncodeExactBody(t *testing.T) {
	ada := &connection.Account{ID: "oid-1", TenantID: "tid-1", Email: "ada@contoso.com", DisplayName: "Ada Lovelace"}
	paris := time.FixedZone("CET", 3600)
	tests := []struct {
		name string
		e    connection.Event
		want string
	}{
		{
			name: "connected with account, null reason",
			e:    connection.Event{Type: connection.EventConnected, UserID: "42", At: at, Account: ada},
			want: `{"type":"connection.connected","user_id":"42","at":"2026-11-25T23:35:00Z","account":{"id":"oid-1","tenant_id":"tid-1","email":"ada@contoso.com","display_name":"Ada Lovelace"},"reason":null}`,
		},
		{
			name: "reconnect required without account",
			e:    connection.Event{Type: connection.EventReconnectRequired, UserID: "42", At: at, Reason: "invalid_grant"},
			want: `{"type":"connection.reconnect_required","user_id":"42","at":"2026-11-25T23:35:00Z","account":null,"reason":"invalid_grant"}`,
		},
		{
			name: "recovered, empty account fields stay present",
			e:    connection.Event{Type: connection.EventRecovered, UserID: "7", At: at, Account: &connection.Account{ID: "oid-2"}},
			want: `{"type":"connection.recovered","user_id":"7","at":"2026-11-25T23:35:00Z","account":{"id":"oid-2","tenant_id":"","email":"","display_name":""},"reason":null}`,
		},
		{
			name: "disconnected, local time becomes UTC, sub-second dropped",
			e:    connection.Event{Type: connection.EventDisconnected, UserID: "42", At: time.Date(2026, 11, 26, 0, 35, 0, 999, paris)},
			want: `{"type":"connection.disconnected","user_id":"42","at":"2026-11-25T23:35:00Z","account":null,"reason":null}`,
		},
		{
			name: "opaque user id is not HTML-escaped",
			e:    connection.Event{Type: connection.EventConnected, UserID: `a/b?c#d<e>&f"g\ü`, At: at},
			want: `{"type":"connection.connected","user_id":"a/b?c#d<e>&f\"g\\ü","at":"2026-11-25T23:35:00Z","account":null,"reason":null}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := encode(tt.e)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("body:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestEncodeRejectsInvalidEvents(t *testing.T) {
	for _, e := range []connection.Event{
		{Type: "connection.renamed", UserID: "42", At: at},
		{Type: "", UserID: "42", At: at},
		{Type: connection.EventConnected, UserID: "", At: at},
	} {
		if body, err := encode(e); err == nil {
			t.Errorf("encode(%+v) = %s, want an error", e, body)
		} else if !strings.HasPrefix(err.Error(), "events: ") {
			t.Errorf("error %q lacks the package prefix", err)
		}
	}
}

func TestSignAndVerify(t *testing.T) {
	body := []byte(`{"type":"connection.connected"}`)
	sig := Sign("s3cret", body)
	if !regexp.MustCompile(`^sha256=[0-9a-f]{64}$`).MatchString(sig) {
		t.Fatalf("Sign = %q, want sha256=<64 hex>", sig)
	}
	tests := []struct {
		name   string
		secret string
		body   []byte
		header string
		want   bool
	}{
		{"valid", "s3cret", body, sig, true},
		{"valid with surrounding space", "s3cret", body, " " + sig + " ", true},
		{"upper-case hex", "s3cret", body, "sha256=" + strings.ToUpper(strings.TrimPrefix(sig, "sha256=")), true},
		{"wrong secret", "other", body, sig, false},
		{"tampered body", "s3cret", append(bytes.Clone(body), ' '), sig, false},
		{"no prefix", "s3cret", body, strings.TrimPrefix(sig, "sha256="), false},
		{"other algorithm", "s3cret", body, "sha1=" + strings.TrimPrefix(sig, "sha256="), false},
		{"truncated", "s3cret", body, sig[:len(sig)-2], false},
		{"not hex", "s3cret", body, "sha256=zz", false},
		{"empty header", "s3cret", body, "", false},
		{"empty secret never verifies", "", body, Sign("", body), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Verify(tt.secret, tt.body, tt.header); got != tt.want {
				t.Errorf("Verify = %t, want %t", got, tt.want)
			}
		})
	}
}

// TestSignKnownVector pins the algorithm to RFC 4231 test case 2 (HMAC-SHA-256
// with key "Jefe"), so a change of hash or encoding cannot pass unnoticed.
func TestSignKnownVector(t *testing.T) {
	got := Sign("Jefe", []byte("what do ya want for nothing?"))
	want := "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
	if got != want {
		t.Errorf("Sign = %s, want %s", got, want)
	}
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestNewID(t *testing.T) {
	t.Run("deterministic source", func(t *testing.T) {
		src := bytes.NewReader(bytes.Repeat([]byte{0xff}, 16))
		got, err := newID(src)
		if err != nil {
			t.Fatal(err)
		}
		if want := "ffffffff-ffff-4fff-bfff-ffffffffffff"; got != want {
			t.Errorf("newID = %s, want %s", got, want)
		}
	})
	t.Run("unique and well formed", func(t *testing.T) {
		seen := make(map[string]bool)
		for range 10000 {
			id, err := newID(rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			if !uuidV4.MatchString(id) {
				t.Fatalf("id %q is not a v4 UUID", id)
			}
			if seen[id] {
				t.Fatalf("id %q repeated", id)
			}
			seen[id] = true
		}
	})
	t.Run("short source fails", func(t *testing.T) {
		if _, err := newID(bytes.NewReader(make([]byte, 15))); err == nil {
			t.Error("newID from 15 bytes: want an error")
		}
		boom := errors.New("boom")
		if _, err := newID(iotest.ErrReader(boom)); !errors.Is(err, boom) {
			t.Errorf("newID error = %v, want it to wrap %v", err, boom)
		}
	})
}
