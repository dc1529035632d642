package clocktest_test

import (
	"sync"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/clocktest"
)

var start = time.Date(2026, 11, 25, 23, 30, 0, 0, time.UTC)

func TestNowStandsStillUntilAdvanced(t *testing.T) {
	c := clocktest.New(start)
	if got := c.Now(); !got.Equal(start) {
		t.Fatalf("Now = %v, want %v", got, start)
	}
	time.Sleep(time.Millisecond)
	if got := c.Now(); !got.Equal(start) {
		t.Fatalf("Now moved on its own: %v, want %v", got, start)
	}
	c.Advance(45 * time.Minute)
	if want := start.Add(45 * time.Minute); !c.Now().Equal(want) {
		t.Fatalf("after Advance(45m) Now = %v, want %v", c.Now(), want)
	}
	c.Advance(-time.Hour)
	if want := start.Add(-15 * time.Minute); !c.Now().Equal(want) {
		t.Fatalf("after Advance(-1h) Now = %v, want %v", c.Now(), want)
	}
}

// TestConcurrentUse is meant for -race: readers and writers share a clock.
func TestConcurrentUse(t *testing.T) {
	c := clocktest.New(start)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				c.Advance(time.Second)
				_ = c.Now()
			}
		})
	}
	wg.Wait()
	if want := start.Add(400 * time.Second); !c.Now().Equal(want) {
		t.Fatalf("after 400 one-second advances Now = %v, want %v", c.Now(), want)
	}
}
