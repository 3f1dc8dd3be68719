package hub

import (
	"runtime"
	"testing"
	"time"
)

// A heartbeat, or an unknown event, does not grow the socket reader's stack: the reader parks
// in Read with the stack it has, and a goroutine keeps a grown stack
// until a GC finds it less than a quarter used, which the parked reader
// never is, so one heartbeat through a deep call (encoding/json's
// reflection did it) doubled every idle socket's stack for good (4 to
// 8 KiB). Not parallel: it reads the process's stack total.
func TestHeartbeatKeepsTheReaderStack(t *testing.T) {
	e := newEnv(t)
	_, srv := e.node(Options{})
	const n = 200
	var cs []*client
	var topics []string
	for range n {
		_, _, topic, token := e.channel()
		c := dial(t, srv, token)
		c.mustJoin(topic)
		cs = append(cs, c)
		topics = append(topics, topic)
	}
	stack := func() float64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return float64(m.StackInuse)
	}
	before := stack()
	for _, c := range cs {
		c.heartbeat()
		c.push(nil, "phoenix", "heartbeat", map[string]any{}) // one more, unread: the reply waits in the socket
	}
	for i, c := range cs {
		c.read()
		c.push(nil, topics[i], "nope", map[string]any{}) // answered with an error reason
		if st, reason := c.read().reply(); st != "error" || reason != reasonUnknownEvent {
			t.Fatalf("unknown event: %s %s", st, reason)
		}
	}
	// A reader's grown stack stays as long as its socket is open; what
	// other goroutines hold for a moment (the suite's, the runtime's) does
	// not: measured again a few times before it counts.
	grew := 0.0
	for range 5 {
		if grew = (stack() - before) / n / 1024; grew <= 1 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("two heartbeats and an unknown event grew the stacks by %.1f KiB per socket", grew)
}
