package channels

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/hub"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// streamRoom records what a task's run pushes into its room: the stream's
// pieces and the messages, in the order they were sent. Its first fail
// pieces fail (their commands error in the pipeline) as a Redis outage would.
type streamRoom struct {
	mu     sync.Mutex
	events []string // "chunk <payload>", "chunk_reset <payload>", "response <message>"
	fail   int
	tries  int
	seq    int64 // the last piece's
}

func (r *streamRoom) PublishIn(_ context.Context, _ redis.Pipeliner, _, _ string, msg json.RawMessage) func() (int64, error) {
	r.mu.Lock()
	r.events = append(r.events, "response "+string(msg))
	r.mu.Unlock()
	return func() (int64, error) { return 1, nil }
}

func (r *streamRoom) LastSeq(context.Context, string) (int64, error) { return 0, nil }

// AppendStreamIn queues a command that fails while fail lasts (a Redis
// outage), else one that succeeds, recording the piece once per seq (the
// room drops a repeat).
func (r *streamRoom) AppendStreamIn(ctx context.Context, p redis.Pipeliner, _ string, seq int64, event string, payload json.RawMessage, _ bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tries++
	if r.fail > 0 {
		r.fail--
		p.Do(ctx, "riverhub-test-no-such-command")
		return nil
	}
	p.Ping(ctx)
	if seq > r.seq {
		r.seq = seq
		r.events = append(r.events, event+" "+string(payload))
	}
	return nil
}

func (r *streamRoom) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

// streamingRunner streams parts (a "" part is a reset), gap apart, and
// answers {"content": the parts after the last reset}.
func streamingRunner(gap time.Duration, parts ...string) runnerFunc {
	return func(ctx context.Context, req ai.Request) (ai.Result, error) {
		var text string
		for _, p := range parts {
			if req.OnDelta != nil {
				req.OnDelta(ai.Delta{Text: p, Reset: p == ""})
			}
			if p == "" {
				text = ""
			}
			text += p
			time.Sleep(gap)
		}
		data, _ := json.Marshal(map[string]string{"content": text})
		return ai.Result{Data: data, Provider: "mock", Model: "m",
			Attempts: []ai.Attempt{{Provider: "mock", Model: "m", Success: true}}}, nil
	}
}

// replay reads a room's events as a page would: chunks append, a reset
// clears; it returns the text, the pieces' indexes and the final message.
func replay(t *testing.T, events []string) (text string, indexes []int, final string) {
	t.Helper()
	for _, e := range events {
		ev, payload, _ := strings.Cut(e, " ")
		if final != "" {
			t.Fatalf("%s after the final message: %v", ev, events)
		}
		var p chunkPayload
		_ = json.Unmarshal([]byte(payload), &p)
		switch ev {
		case hub.EventChunk:
			text += *p.Delta
			indexes = append(indexes, p.Index)
		case hub.EventChunkReset:
			text = ""
			indexes = append(indexes, p.Index)
		case "response":
			final = payload
		}
	}
	return text, indexes, final
}

func streamedTask(t *testing.T, room *streamRoom, o Options, r Runner, rerun bool) (*Task, []string) {
	t.Helper()
	c, prefix := rdbtest.New(t)
	o.Publisher = room
	s := newService(t, c, prefix, r, o)
	task := newTask()
	task.Stream, task.rerun = true, rerun
	if rerun {
		// A run after an earlier one was cut short (process sets rerun
		// from the start script's count of runs): its generation alone.
		if _, err := s.generate(context.Background(), task, nil, 0); err != nil {
			t.Fatal(err)
		}
		return task, room.snapshot()
	}
	if err := s.Submit(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	s.Start()
	return task, room.final(t)
}

// final waits for the final message and returns every event.
func (r *streamRoom) final(t *testing.T) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		events := r.snapshot()
		if n := len(events); n > 0 && strings.HasPrefix(events[n-1], "response ") {
			return events
		}
		if time.Now().After(deadline) {
			t.Fatalf("no final message: %v", events)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A streamed run's text reaches the room coalesced, in order, before the
// final message, and a page that appends the chunks (clearing at a reset)
// holds the final answer.
func TestStreamedRunReachesTheRoom(t *testing.T) {
	t.Parallel()
	parts := []string{"The ", "quick ", "brown ", "fox", "", "A ", "lazy ", "dog ", "sleeps", "."}
	room := &streamRoom{}
	_, events := streamedTask(t, room, Options{StreamWindow: 25 * time.Millisecond}, streamingRunner(10*time.Millisecond, parts...), false)
	text, indexes, final := replay(t, events)
	if text != "A lazy dog sleeps." {
		t.Fatalf("the chunks after the last reset read %q: %v", text, events)
	}
	if !strings.Contains(final, `"data":{"content":"A lazy dog sleeps."}`) {
		t.Fatalf("final message %s", final)
	}
	for i, n := range indexes {
		if n != i+1 {
			t.Fatalf("indexes %v, want 1, 2, 3, …", indexes)
		}
	}
	// 10 parts 10 ms apart in 25 ms windows: coalesced, not one each.
	if chunks := strings.Count(strings.Join(events, "\n"), "chunk {"); chunks >= 8 || chunks < 2 {
		t.Errorf("%d chunks for 9 text parts over ~100 ms in 25 ms windows: %v", chunks, events)
	}
	if !strings.Contains(strings.Join(events, "\n"), "chunk_reset {") {
		t.Errorf("no chunk_reset after text was shown: %v", events)
	}
}

// StreamBytes sends a chunk as soon as that much text is waiting, the
// window notwithstanding.
func TestStreamBytesFlushEarly(t *testing.T) {
	t.Parallel()
	room := &streamRoom{}
	parts := []string{strings.Repeat("a", 30), strings.Repeat("b", 30), strings.Repeat("c", 30)}
	_, events := streamedTask(t, room, Options{StreamWindow: time.Hour, StreamBytes: 16}, streamingRunner(20*time.Millisecond, parts...), false)
	if text, _, _ := replay(t, events); text != strings.Join(parts, "") {
		t.Fatalf("text %q", text)
	}
	if n := len(events); n != 4 {
		t.Fatalf("%d events, want a chunk per part and the final message: %v", n, events)
	}
}

// A reset before any text was shown publishes nothing (the page has
// nothing to clear); a rerun (an earlier run may have streamed) starts with
// a reset once it has text, and with none sends nothing.
func TestStreamResets(t *testing.T) {
	t.Parallel()
	_, events := streamedTask(t, &streamRoom{}, Options{}, streamingRunner(0, "", "x"), false)
	if len(events) != 2 || !strings.HasPrefix(events[0], `chunk {"channel_id":`) || !strings.Contains(events[0], `"index":1,"delta":"x"`) {
		t.Fatalf("a reset before any text: %v", events)
	}
	_, events = streamedTask(t, &streamRoom{}, Options{}, streamingRunner(0, "y"), true)
	if len(events) != 2 || !strings.HasPrefix(events[0], "chunk_reset ") || !strings.Contains(events[1], `"index":2,"delta":"y"`) {
		t.Fatalf("a rerun: %v", events)
	}
	_, events = streamedTask(t, &streamRoom{}, Options{}, streamingRunner(0), true)
	if len(events) != 0 {
		t.Fatalf("a rerun without text: %v", events)
	}
}

// A publish that fails is tried again with the same bytes; nothing is
// lost or repeated, and the final message still comes last.
func TestStreamPublishRetried(t *testing.T) {
	t.Parallel()
	room := &streamRoom{fail: 3}
	_, events := streamedTask(t, room, Options{}, streamingRunner(time.Millisecond, "a", "b", "c"), false)
	text, indexes, final := replay(t, events)
	if text != "abc" || final == "" {
		t.Fatalf("text %q, final %q: %v", text, final, events)
	}
	for i, n := range indexes {
		if n != i+1 {
			t.Fatalf("indexes %v: a piece was lost or repeated", indexes)
		}
	}
	if room.tries < len(indexes)+3 {
		t.Fatalf("%d tries for %d pieces and 3 failures", room.tries, len(indexes))
	}
}

// A task without stream never publishes a piece.
func TestUnstreamedRunPublishesNoChunks(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	room := &streamRoom{}
	var got bool
	s := newService(t, c, prefix, runnerFunc(func(ctx context.Context, req ai.Request) (ai.Result, error) {
		got = req.OnDelta != nil
		return streamingRunner(0, "x")(ctx, req)
	}), Options{Publisher: room})
	if err := s.Submit(context.Background(), newTask()); err != nil {
		t.Fatal(err)
	}
	s.Start()
	if events := room.final(t); got || len(events) != 1 {
		t.Fatalf("OnDelta set: %v; events %v", got, events)
	}
}

// Past its context, or for a run cut short, close drops the rest: no
// round after it returns sends anything of the stream.
func TestStreamCloseDropsTheRest(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	for _, abandon := range []bool{false, true} {
		room := &streamRoom{fail: 1 << 30} // Redis never takes a piece
		s := newService(t, c, prefix, answer(`{}`), Options{Publisher: room})
		task := newTask()
		task.Stream = true
		st := s.newStreamer(context.Background(), task)
		st.delta(ai.Delta{Text: "lost"})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		start := time.Now()
		st.close(ctx, abandon)
		cancel()
		if took := time.Since(start); took > 2*time.Second || (abandon && took > 50*time.Millisecond) {
			t.Fatalf("abandon %v: close took %v", abandon, took)
		}
		room.mu.Lock()
		tries := room.tries
		room.mu.Unlock()
		time.Sleep(100 * time.Millisecond)
		room.mu.Lock()
		after := room.tries
		room.mu.Unlock()
		if after > tries+1 { // a round already in flight may still send its piece
			t.Fatalf("abandon %v: %d more tries after close returned", abandon, after-tries)
		}
	}
}
