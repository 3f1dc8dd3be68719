package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
)

// closeFrameOf is the phx_close a Phoenix server sends when the channel
// process of a join stops: join_ref and ref both the join's ref, payload {}.
func closeFrameOf(topic, joinRef string) string {
	return fmt.Sprintf(`[%q,%q,%q,"phx_close",{}]`, joinRef, joinRef, topic)
}

// expectClose reads the next frame and checks it is the phx_close of the
// join.
func (c *client) expectClose(topic, joinRef string) {
	c.tb.Helper()
	if m := c.read(); m.Raw != closeFrameOf(topic, joinRef) {
		c.tb.Fatalf("got  %s\nwant %s", m.Raw, closeFrameOf(topic, joinRef))
	}
}

func TestIsFinal(t *testing.T) {
	for _, tt := range []struct {
		payload string
		want    bool
	}{
		{`{"status":"success","data":{}}`, true},
		{`{"status":"completed"}`, true},
		{`{"data":{"status":"ai_generated"},"status":"error","error":{"message":"m","code":"c"}}`, true},
		{`{"status":"ai_generated"}`, false},
		{`{"status":"simulating_callback"}`, false},
		{`{"status":"Success"}`, false},
		{`{"data":{"status":"success"}}`, false},
		{`{"n":1}`, false},
		{`{"status":1}`, false},
		// As encoding/json reads it: keys matched regardless of case, the
		// last one wins, escapes decoded; invalid JSON is no message.
		{`{"Status":"success"}`, true},
		{`{"status":"success","status":"ai_generated"}`, false},
		{`{"status":"ai_generated","status":"error"}`, true},
		{`{"status":"succ\u0065ss"}`, true},
		{`{"status":null}`, false},
		{`{"status":1,"status":"success"}`, false},
		{`{"status":"success"`, false},
		{`[{"status":"success"}]`, false},
	} {
		if got := isFinal(tt.payload); got != tt.want {
			t.Errorf("isFinal(%s) = %v, want %v", tt.payload, got, tt.want)
		}
		var m struct {
			Status string `json:"status"`
		}
		std := json.Unmarshal([]byte(tt.payload), &m) == nil && (m.Status == "success" || m.Status == "completed" || m.Status == "error")
		if std != tt.want {
			t.Errorf("encoding/json reads %s as final: %v, want %v", tt.payload, std, tt.want)
		}
	}
}

// The final message is followed by phx_close on its topic, after it; the
// join is over: later messages are not pushed, the room is let go, and an
// event on the topic is one for a topic not joined.
func TestFinalMessageClosesTheChannel(t *testing.T) {
	t.Parallel()
	for _, final := range []string{
		`{"status":"success","data":{"a":1}}`,
		`{"status":"completed","data":{}}`,
		`{"status":"error","error":{"message":"timeout","code":"callback_timeout"}}`,
	} {
		t.Run(final, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			reg := prometheus.NewRegistry()
			h, srv := e.node(Options{Registerer: reg})
			pid, cid, topic, token := e.channel()
			c := dial(t, srv, token)
			ref := c.mustJoin(topic)
			publish(t, h, pid, cid, `{"status":"ai_generated"}`)
			c.response(topic, ref, `{"status":"ai_generated"}`)
			publish(t, h, pid, cid, final)
			c.response(topic, ref, final)
			c.expectClose(topic, ref)

			eventually(t, "the room to close", func() bool { return h.roomCount() == 0 })
			publish(t, h, pid, cid, `{"status":"late"}`)
			if extra := c.heartbeat(); len(extra) > 0 {
				t.Fatalf("pushed after the channel ended: %v", extra)
			}
			c.push(&ref, topic, "ping", map[string]any{})
			if st, reason := c.read().reply(); st != "error" || reason != "unmatched topic" {
				t.Fatalf("event on the ended topic: %s %q, want unmatched topic", st, reason)
			}
			// A leave that crossed the close is answered ok, without a
			// second close.
			c.push(&ref, topic, "phx_leave", map[string]any{})
			if st, _ := c.read().reply(); st != "ok" {
				t.Fatal("leave of the ended topic refused")
			}
			if extra := c.heartbeat(); len(extra) > 0 {
				t.Fatalf("after the leave: %v", extra)
			}
			if got := counterValue(t, reg, "riverhub_hub_channel_closes_total"); got != 1 {
				t.Fatalf("channel closes = %v, want 1", got)
			}
		})
	}
}

// Every node closes its own sockets' joins after the final message has
// reached them through Redis.
func TestFinalMessageClosesOnEveryNode(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, srvA := e.node(Options{})
	_, srvB := e.node(Options{})
	pid, cid, topic, token := e.channel()
	short := "ai_response:" + strings.ToUpper(cid)
	type joined struct {
		c     *client
		topic string
		ref   string
	}
	var all []joined
	for _, srv := range []string{srvA.URL, srvB.URL, srvB.URL} {
		s := srvA
		if srv == srvB.URL {
			s = srvB
		}
		for _, tp := range []string{topic, short} {
			c := dial(t, s, token)
			all = append(all, joined{c, tp, c.mustJoin(tp)})
		}
	}
	publish(t, a, pid, cid, `{"status":"success","n":1}`)
	for _, j := range all {
		j.c.response(j.topic, j.ref, `{"status":"success","n":1}`)
		j.c.expectClose(j.topic, j.ref)
	}
}

// A join of a channel that has ended gets its reply, the history (the final
// message last) and then phx_close; with last_seq at or past the final
// message, the reply and phx_close.
func TestLateJoinToAnEndedChannel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, srv := e.node(Options{})
	pid, cid, topic, token := e.channel()
	publish(t, h, pid, cid, `{"status":"ai_generated"}`)
	publish(t, h, pid, cid, `{"status":"completed"}`)

	c := dial(t, srv, token)
	ref := c.mustJoin(topic)
	c.response(topic, ref, `{"status":"ai_generated"}`)
	c.response(topic, ref, `{"status":"completed"}`)
	c.expectClose(topic, ref)
	if extra := c.heartbeat(); len(extra) > 0 {
		t.Fatalf("after phx_close: %v", extra)
	}
	eventually(t, "the room to close", func() bool { return h.roomCount() == 0 })

	// The same socket joins again, with what it has: nothing is replayed.
	ref2, m := c.joinWith(topic, map[string]any{"last_seq": int64(2)})
	if st, _ := m.reply(); st != "ok" {
		t.Fatalf("rejoin: %s", m)
	}
	c.expectClose(topic, ref2)
	if extra := c.heartbeat(); len(extra) > 0 {
		t.Fatalf("after phx_close: %v", extra)
	}
}

// Joins racing the final message (on two nodes, while messages are
// published): each gets every message exactly once, in order, then
// phx_close exactly once, and nothing after it.
func TestJoinsRacingTheFinalMessage(t *testing.T) {
	t.Parallel()
	joinWhilePublishing(t, 100, true)
}

// spellings returns n topics of one channel, all different: the long and
// the short form, with the ids' letters in varying case.
func spellings(pid, cid string, n int) []string {
	flip := func(id string, bits int) string {
		b := []byte(id)
		for i, k := 0, 0; i < len(b); i++ {
			if b[i] >= 'a' && b[i] <= 'f' {
				if bits>>k&1 == 1 {
					b[i] -= 'a' - 'A'
				}
				k++
			}
		}
		return string(b)
	}
	out := make([]string, 0, n)
	for i := 0; len(out) < n; i++ {
		out = append(out, "ai_response:"+flip(pid, i)+":"+flip(cid, i>>1))
		if len(out) < n {
			out = append(out, "ai_response:"+flip(cid, i))
		}
	}
	return out
}

// letteredChannel is e.channel with ids that have six letters or more
// each, so that spellings can give 64 different cases of each.
func (e *env) letteredChannel() (pid, cid, topic, token string) {
	letters := func(id string) int {
		return len(strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'f' {
				return r
			}
			return -1
		}, id))
	}
	for {
		pid, cid, topic, token = e.channel()
		if letters(pid) >= 6 && letters(cid) >= 6 {
			return
		}
	}
}

// One channel joined on one socket under many spellings of its topic is
// one join: each new join closes the one before (phx_close on the old
// spelling with the old join ref, then the new join's reply), and every
// message arrives once, on the last join, the final message included.
func TestSpellingsOfATopicShareOneJoin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	h, srv := e.node(Options{Registerer: reg, MaxChannelsPerSocket: 1})
	pid, cid, _, token := e.letteredChannel()
	topics := spellings(pid, cid, 100)
	seen := map[string]bool{}
	for _, tp := range topics {
		if seen[tp] {
			t.Fatalf("spelling %s twice", tp)
		}
		seen[tp] = true
	}

	c := dial(t, srv, token)
	var last, lastRef string
	for _, tp := range topics {
		ref := c.nextRef()
		c.writeRaw(fmt.Sprintf(`[%q,%q,%q,"phx_join",{}]`, ref, ref, tp))
		if last != "" {
			c.expectClose(last, lastRef)
		}
		if m := c.read(); m.Event != "phx_reply" || *m.Ref != ref || m.Topic != tp {
			t.Fatalf("want the reply to join %s of %s, got %s", ref, tp, m)
		} else if st, reason := m.reply(); st != "ok" {
			t.Fatalf("join of %s: %s %s", tp, st, reason)
		}
		last, lastRef = tp, ref
	}
	if got := counterValue(t, reg, "riverhub_hub_joined_channels"); got != 1 {
		t.Fatalf("joined channels = %v, want 1", got)
	}
	for n := 1; n <= 3; n++ {
		publish(t, h, pid, cid, fmt.Sprintf(`{"status":"ai_generated","n":%d}`, n))
	}
	publish(t, h, pid, cid, `{"status":"completed","n":4}`)
	for n := 1; n <= 3; n++ {
		c.response(last, lastRef, fmt.Sprintf(`{"status":"ai_generated","n":%d}`, n))
	}
	c.response(last, lastRef, `{"status":"completed","n":4}`)
	c.expectClose(last, lastRef)
	if extra := c.heartbeat(); len(extra) > 0 {
		t.Fatalf("more frames: %v", extra)
	}
}

// A leave names the join it ends: the topic as spelled at the join, and
// its join ref. A leave of another spelling, or of an older join of the
// same spelling, is answered ok and leaves the current join alone.
func TestLeaveNamesItsJoin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, srv := e.node(Options{})
	pid, cid, topic, token := e.channel()
	short := "ai_response:" + cid
	c := dial(t, srv, token)
	first := c.mustJoin(short)
	ref := c.nextRef()
	c.writeRaw(fmt.Sprintf(`[%q,%q,%q,"phx_join",{}]`, ref, ref, topic))
	c.expectClose(short, first)
	if st, _ := c.read().reply(); st != "ok" {
		t.Fatal("second join refused")
	}
	for _, leave := range []struct {
		joinRef *string
		topic   string
	}{{&first, short}, {nil, short}, {&first, topic}} {
		c.push(leave.joinRef, leave.topic, "phx_leave", map[string]any{})
		if st, _ := c.read().reply(); st != "ok" {
			t.Fatalf("leave %v refused", leave)
		}
	}
	publish(t, h, pid, cid, `{"n":1}`)
	c.response(topic, ref, `{"n":1}`)
	leave := c.push(&ref, topic, "phx_leave", map[string]any{})
	if m := c.read(); *m.Ref != leave {
		t.Fatalf("leave reply: %s", m)
	}
	c.expectClose(topic, ref)
}

// A socket without a join is closed after IdleTimeout with 1000, however
// many heartbeats it sends; a joined socket is not; once its channel has
// ended it is, one IdleTimeout later.
func TestIdleSocketClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	const idle = 400 * time.Millisecond
	h, srv := e.node(Options{IdleTimeout: idle, Registerer: reg})
	pid, cid, topic, token := e.channel()

	t.Run("never joined", func(t *testing.T) {
		c := dial(t, srv, token)
		c.sendUntilClosed(idle/4, func(i int) string { return fmt.Sprintf(`[null,"%d","phoenix","heartbeat",{}]`, i) })
	})
	t.Run("joined, then ended", func(t *testing.T) {
		c := dial(t, srv, token)
		ref := c.mustJoin(topic)
		time.Sleep(3 * idle)
		c.heartbeat() // still open
		publish(t, h, pid, cid, `{"status":"success"}`)
		c.response(topic, ref, `{"status":"success"}`)
		c.expectClose(topic, ref)
		if code, reason := c.closeStatus(); code != websocket.StatusNormalClosure || reason != idleReason {
			t.Fatalf("closed with %d %q, want 1000 %q", code, reason, idleReason)
		}
	})
	t.Run("a refused join does not count", func(t *testing.T) {
		c := dial(t, srv, token)
		c.sendUntilClosed(idle/4, func(i int) string {
			return fmt.Sprintf(`["%d","%d","ai_response:not-a-uuid","phx_join",{}]`, i, i)
		})
	})
	if got := counterValue(t, reg, "riverhub_hub_idle_closes_total"); got != 3 {
		t.Fatalf("idle closes = %v, want 3", got)
	}
}

// sendUntilClosed sends frame(i) every interval, reading whatever comes
// back, until the server closes the socket (failing after 10 s), and checks
// that it closed the socket as idle. What it sends must not keep an idle
// socket open.
func (c *client) sendUntilClosed(interval time.Duration, frame func(i int) string) {
	c.tb.Helper()
	done := make(chan struct{})
	var code websocket.StatusCode
	var reason string
	go func() {
		defer close(done)
		code, reason = c.closeStatus()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 1; ; i++ {
		select {
		case <-done:
		case <-time.After(interval):
			if c.c.Write(ctx, websocket.MessageText, []byte(frame(i))) == nil {
				continue
			}
			<-done
		}
		break
	}
	if code != websocket.StatusNormalClosure || reason != idleReason {
		c.tb.Fatalf("closed with %d %q, want 1000 %q", code, reason, idleReason)
	}
}

// The join counter counts each answer once, by result.
func TestJoinCounter(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	_, srv := e.node(Options{Registerer: reg})
	_, _, topic, token := e.channel()
	dial(t, srv, token).mustJoin(topic)
	c := dial(t, srv, token)
	c.mustJoin(topic)
	c.join("room:lobby")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "riverhub_hub_joins_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	if got["ok"] != 2 || got["refused"] != 1 || got["unavailable"] != 0 {
		t.Fatalf("joins by result = %v, want ok 2, refused 1", got)
	}
}

// BenchmarkIsFinal reads the status of a callback's final message, as a
// publish does for each message and a socket for each entry it pushes.
func BenchmarkIsFinal(b *testing.B) {
	msg := `{"status":"completed","channel_id":"01a24a0d-8cc6-7c94-8820-194702539a79","event_name":"bench.done",` +
		`"data":{"i":12345},"ai_response":{"data":{"ok":true}},"customer_data":{"user":"u-1","plan":"team"},` +
		`"task_id":"task-1","callback_metadata":{"source":"backend"},"timestamp":"2026-12-06T06:42:56.123Z"}`
	b.ReportAllocs()
	for b.Loop() {
		if !isFinal(msg) {
			b.Fatal("not final")
		}
	}
}
