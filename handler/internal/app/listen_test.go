package app_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/app"
)

// TestRunListensOnLoopbackOnly: the handler is reachable only through the
// Functions host on the same machine (contract: 127.0.0.1:$PORT), so
// POST /refresh and the API cannot be called around the host, whatever
// network the worker sits on. The readiness probe answers on 127.0.0.1 and
// nothing else accepts a connection on that port.
func TestRunListensOnLoopbackOnly(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	env := map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": strconv.Itoa(port)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, func(k string) string { return env[k] }, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})

	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET / on loopback: %d", resp.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the handler never answered on loopback: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A socket bound to all addresses would also answer on 127.0.0.2; one
	// bound to 127.0.0.1 does not. This proves the bind address while
	// sending nothing off loopback (this workplace allows only loopback).
	if conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.2", strconv.Itoa(port)), time.Second); err == nil {
		conn.Close()
		t.Errorf("the handler accepts connections on 127.0.0.2:%d: it is not bound to 127.0.0.1 alone", port)
	}
	// [::1] is loopback too, but the contract names 127.0.0.1 only.
	if conn, err := net.DialTimeout("tcp", net.JoinHostPort("::1", strconv.Itoa(port)), time.Second); err == nil {
		conn.Close()
		t.Errorf("the handler accepts connections on [::1]:%d", port)
	}
}
