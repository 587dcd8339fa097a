package agent

import (
	"testing"
	"testing/synctest"
	"time"
)

func TestAgentMovesToTheNextServerWhenOneDrains(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgentOn(t, Config{DeviceID: "d1"}, "a", "b")
		c := h.connOn("a")
		c.ack(1)
		c.close(draining, time.Minute) // the hint is about a, not b
		start := time.Now()
		c = h.connOn("b")
		if waited := time.Since(start); waited >= time.Minute {
			t.Fatalf("waited %v for the next server: the draining server's retry_after was applied to it", waited)
		}
		c.ack(2)
		c.close(draining, 0)
		h.connOn("a").ack(3) // and round again
	})
}

func TestAgentMovesToTheNextServerWhenOneIsDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgentOn(t, Config{DeviceID: "d1"}, "a", "b")
		c := h.connOn("a")
		c.ack(1)
		h.lis["a"].Close() // new connections to a fail from now on
		c.finish(nil)
		h.connOn("b").ack(2)
	})
}

func TestAgentStaysOnItsServerWhenReplaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgentOn(t, Config{DeviceID: "d1"}, "a", "b")
		c := h.connOn("a")
		c.ack(1)
		c.close(replaced, 0)
		h.connOn("a").ack(2)
	})
}
