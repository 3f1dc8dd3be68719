package channels

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/dispatch"
	"github.com/riverhub/riverhub/hub"
	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/internal/jscanon"
	"github.com/riverhub/riverhub/internal/rdb"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

func eventTask() *Task {
	t := newTask()
	t.Workflow.ID, t.Workflow.EventName = "wf_1", "new_thing"
	return t
}

func success(data string) CallbackBody {
	raw := `{"data":` + data + `,"task_id":"t1"}`
	c, _ := jscanon.Canonical([]byte(raw))
	return CallbackBody{Data: json.RawMessage(data), TaskID: json.RawMessage(`"t1"`), Canonical: c}
}

// generated submits an event-driven task and waits until it awaits its
// callback.
func generated(tb testing.TB, s *Service, task *Task) View {
	tb.Helper()
	if err := s.Submit(context.Background(), task); err != nil {
		tb.Fatal(err)
	}
	return waitStatus(tb, s, task.ChannelID, StatusAIGenerated)
}

func conflictCode(err error) string {
	if e := apperr.As(err); e != nil && e.Kind == apperr.Conflict {
		return e.Code
	}
	return fmt.Sprintf("not a conflict: %v", err)
}

// history is the room's messages, as a late joiner would receive them.
func history(tb testing.TB, s *Service, cid string) []map[string]any {
	tb.Helper()
	raw, err := s.rdb.LRange(context.Background(), s.o.Prefix+":ch:{"+cid+"}:hist", 0, -1).Result()
	if err != nil {
		tb.Fatal(err)
	}
	out := make([]map[string]any, len(raw))
	for i, r := range raw {
		var e struct {
			Payload map[string]any `json:"payload"`
		}
		if err := json.Unmarshal([]byte(r), &e); err != nil {
			tb.Fatal(err)
		}
		out[i] = e.Payload
	}
	return out
}

// waitHistory waits until the room holds at least n messages.
func waitHistory(tb testing.TB, s *Service, cid string, n int) []map[string]any {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h := history(tb, s, cid)
		if len(h) >= n || time.Now().After(deadline) {
			return h
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// awaitSettled waits until a callback's settlement, which runs after its
// answer, is done: its last step removes the channel's deadline entry.
func awaitSettled(tb testing.TB, s *Service, cid string) {
	tb.Helper()
	awaitSettledWithin(tb, s, cid, 5*time.Second)
}

func awaitSettledWithin(tb testing.TB, s *Service, cid string, within time.Duration) {
	tb.Helper()
	for end := time.Now().Add(within); ; time.Sleep(2 * time.Millisecond) {
		_, err := s.rdb.ZScore(context.Background(), s.dueKey(cid), cid).Result()
		if errors.Is(err, redis.Nil) {
			return
		}
		if time.Now().After(end) {
			tb.Fatalf("channel %s not settled within %v (%v)", cid, within, err)
		}
	}
}

func statuses(h []map[string]any) string {
	var s []string
	for _, m := range h {
		s = append(s, fmt.Sprint(m["status"]))
	}
	return strings.Join(s, ",")
}

// An event-driven channel: generation → ai_generated (room message and
// task.ai_generated webhook), callback → completed; the same callback again
// is accepted, a different one is a conflict.
func TestCallbackCompletesChannel(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	rec := &recorder{}
	h := hub.New(c, hub.Options{Prefix: prefix, Log: zerolog.Nop()})
	s := newService(t, c, prefix, answer(`{"title":"Inception"}`),
		Options{Publisher: h, Dispatcher: rec, PublicURL: "https://rh.example/"})
	s.Start()
	task := eventTask()
	ctx := context.Background()
	v := generated(t, s, task)
	var gen map[string]any
	_ = json.Unmarshal(v.Message, &gen)
	if gen["status"] != "ai_generated" || gen["event_name"] != "new_thing" || gen["channel_id"] != task.ChannelID {
		t.Errorf("ai_generated message = %s", v.Message)
	}
	// The webhook is enqueued after the room heard of the generation.
	var events []dispatch.Event
	for deadline := time.Now().Add(5 * time.Second); len(events) == 0 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		rec.mu.Lock()
		events = append([]dispatch.Event(nil), rec.events...)
		rec.mu.Unlock()
	}
	if len(events) != 1 || events[0].Type != "task.ai_generated" {
		t.Fatalf("webhook events = %+v", events)
	}
	var hook map[string]any
	if err := json.Unmarshal(events[0].Body, &hook); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"type": "task.ai_generated", "event": "new_thing", "channel_id": task.ChannelID,
		"callback_url": "https://rh.example/api/v1/callback/" + task.ChannelID, "callback_required": true}
	for k, w := range want {
		if hook[k] != w {
			t.Errorf("hook[%s] = %v, want %v", k, hook[k], w)
		}
	}
	if d := get(hook, "ai_response", "data", "title"); d != "Inception" {
		t.Errorf("ai_response.data.title = %v", d)
	}
	if m := get(hook, "meta", "workflow_id"); m != "wf_1" {
		t.Errorf("meta.workflow_id = %v", m)
	}
	if cd := get(hook, "customer_data", "u"); cd != 1.0 {
		t.Errorf("customer_data.u = %v", cd)
	}

	if err := s.Callback(ctx, "p2", task.ChannelID, success(`{"x":1}`)); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("another project's callback: %v", err)
	}
	if err := s.Callback(ctx, "p1", task.ChannelID, success(`{"title":"Inception","id":7}`)); err != nil {
		t.Fatal(err)
	}
	awaitSettled(t, s, task.ChannelID)
	if err := s.Callback(ctx, "p1", task.ChannelID, success(`{"title":"Inception","id":7}`)); err != nil {
		t.Errorf("identical repeat: %v", err)
	}
	if code := conflictCode(s.Callback(ctx, "p1", task.ChannelID, success(`{"other":true}`))); code != "callback_already_received" {
		t.Errorf("different callback: %s", code)
	}
	v = waitStatus(t, s, task.ChannelID, StatusCompleted)
	hist := history(t, s, task.ChannelID)
	if statuses(hist) != "ai_generated,completed" {
		t.Fatalf("room history = %s", statuses(hist))
	}
	done := hist[1]
	if get(done, "data", "id") != 7.0 || get(done, "ai_response", "data", "title") != "Inception" ||
		done["task_id"] != "t1" || get(done, "customer_data", "u") != 1.0 {
		t.Errorf("completed message = %v", done)
	}
	if n, _ := c.ZCard(ctx, s.dueKeys[0]).Result(); n != 0 {
		t.Errorf("%d deadlines left after the callback", n)
	}
	rec.mu.Lock()
	if len(rec.cancels) == 0 || rec.cancels[0].Type != "task.ai_generated" {
		t.Errorf("retries not cancelled: %+v", rec.cancels)
	}
	rec.mu.Unlock()
	if got := entriesOf(t, s, task.ChannelID, func(e Entry) string { return e.Type }); got != "request,generating,ai_attempt,ai_generated,broadcast,callback,broadcast,callback_rejected" {
		t.Errorf("timeline = %s", got)
	}
}

func get(m any, path ...string) any {
	for _, p := range path {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil
		}
		m = mm[p]
	}
	return m
}

// An error callback fails the channel with the backend's error; a callback
// on a standard channel or one still generating is refused.
func TestErrorCallbackAndNotAwaiting(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	h := hub.New(c, hub.Options{Prefix: prefix, Log: zerolog.Nop()})
	s := newService(t, c, prefix, answer(`{"a":1}`), Options{Publisher: h})
	ctx := context.Background()
	std := newTask()
	if err := s.Submit(ctx, std); err != nil {
		t.Fatal(err)
	}
	if code := conflictCode(s.Callback(ctx, "p1", std.ChannelID, success(`1`))); code != "not_awaiting_callback" {
		t.Errorf("callback while pending: %s", code)
	}
	s.Start()
	waitStatus(t, s, std.ChannelID, StatusSuccess)
	if code := conflictCode(s.Callback(ctx, "p1", std.ChannelID, success(`1`))); code != "not_awaiting_callback" {
		t.Errorf("callback on a standard channel: %s", code)
	}
	ev := eventTask()
	if err := s.Submit(ctx, ev); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, ev.ChannelID, StatusAIGenerated)
	body := CallbackBody{Error: "processing_failed", Message: "Database connection timeout",
		Canonical: json.RawMessage(`{"error":"processing_failed","message":"Database connection timeout"}`)}
	if err := s.Callback(ctx, "p1", ev.ChannelID, body); err != nil {
		t.Fatal(err)
	}
	v := waitStatus(t, s, ev.ChannelID, StatusError)
	if !strings.Contains(string(v.Message), `"error":{"message":"Database connection timeout","code":"processing_failed"}`) {
		t.Errorf("error message = %s", v.Message)
	}
}

// No callback before the deadline: the channel fails with callback_timeout,
// its webhook's retries are cancelled, and a late callback is refused.
func TestDeadlineTimesOut(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	rec := &recorder{}
	h := hub.New(c, hub.Options{Prefix: prefix, Log: zerolog.Nop()})
	s := newService(t, c, prefix, answer(`{"a":1}`), Options{Publisher: h, Dispatcher: rec, CallbackTimeout: 300 * time.Millisecond})
	s.Start()
	ctx := context.Background()
	task := eventTask()
	generated(t, s, task)
	v := waitStatus(t, s, task.ChannelID, StatusError)
	if !strings.Contains(string(v.Message), `"code":"callback_timeout"`) {
		t.Errorf("timeout message = %s", v.Message)
	}
	if code := conflictCode(s.Callback(ctx, "p1", task.ChannelID, success(`{}`))); code != "callback_timeout" {
		t.Errorf("late callback: %s", code)
	}
	if hs := statuses(waitHistory(t, s, task.ChannelID, 2)); hs != "ai_generated,error" {
		t.Errorf("room history = %s", hs)
	}
	// The timeout logs its final message's broadcast with it, once.
	if got := entriesOf(t, s, task.ChannelID, func(e Entry) string { return e.Type }); got != "request,generating,ai_attempt,ai_generated,broadcast,timeout,broadcast,callback_rejected" {
		t.Errorf("timeline = %s", got)
	}
	// The deadline's winner publishes and cancels the retries. The
	// cancellation is idempotent, and a settlement is redone when the
	// deadline fired while the generation's own steps still ran (a loaded
	// machine): it may come more than once, each for this channel.
	deadline := time.Now().Add(5 * time.Second)
	for {
		rec.mu.Lock()
		cs := append([]dispatch.Event(nil), rec.cancels...)
		rec.mu.Unlock()
		for _, c := range cs {
			if c.Type != "task.ai_generated" || c.ChannelID != task.ChannelID || c.ProjectID != "p1" {
				t.Fatalf("cancelled %+v, want the task.ai_generated retries of %s", c, task.ChannelID)
			}
		}
		if len(cs) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the webhook's retries were not cancelled")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The playground sends no webhook: ai_generated, then the "simulating"
// message, then the simulated completion after the delay.
func TestPlaygroundSimulatesCallback(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	rec := &recorder{}
	h := hub.New(c, hub.Options{Prefix: prefix, Log: zerolog.Nop()})
	s := newService(t, c, prefix, answer(`{"title":"x"}`), Options{Publisher: h, Dispatcher: rec, PlaygroundDelay: 200 * time.Millisecond})
	s.Start()
	ctx := context.Background()
	task := eventTask()
	task.Playground = true
	if err := s.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	v := waitStatus(t, s, task.ChannelID, StatusCompleted)
	// The winner publishes right after the compare-and-set.
	hist := waitHistory(t, s, task.ChannelID, 3)
	if got := statuses(hist); got != "ai_generated,simulating_callback,completed" {
		t.Fatalf("room history = %s", got)
	}
	if get(hist[2], "data", "simulated") != true || get(hist[2], "data", "title") != "x" || hist[2]["simulated"] != true {
		t.Errorf("simulated completion = %s", v.Message)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.events) != 0 || len(rec.cancels) != 0 {
		t.Errorf("the playground touched webhooks: %+v %+v", rec.events, rec.cancels)
	}
}

// Thousands of callbacks race their deadlines on two nodes: each channel
// ends with exactly one outcome and exactly one final message, and each
// callback's answer agrees with the outcome.
func TestCallbackDeadlineRace(t *testing.T) {
	t.Parallel()
	n := 2000
	if testing.Short() {
		n = 300
	}
	c, prefix := rdbtest.New(t)
	const wait = 3 * time.Second
	var nodes []*Service
	for range 2 {
		h := hub.New(c, hub.Options{Prefix: prefix, Log: zerolog.Nop()})
		s := newService(t, c, prefix, answer(`{"a":1}`), Options{Publisher: h, Dispatcher: &recorder{}, CallbackTimeout: wait})
		nodes = append(nodes, s)
	}
	ctx := context.Background()
	tasks := make([]*Task, n)
	for i := range tasks {
		tasks[i] = eventTask()
		if err := nodes[i%2].Submit(ctx, tasks[i]); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	for _, s := range nodes {
		s.Start()
	}
	for _, tk := range tasks {
		// Generated (on a loaded machine some may already have timed out).
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			v, _ := nodes[0].Get(ctx, "p1", tk.ChannelID)
			if v.Status != StatusPending && v.Status != StatusGenerating {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("channel %s still %s", tk.ChannelID, v.Status)
			}
		}
	}
	t.Logf("generation took %v of the %v deadline", time.Since(start), wait)
	// Aim each callback at its own deadline, give or take 30 ms.
	type answer struct {
		err error
	}
	answers := make([]answer, n)
	var wg sync.WaitGroup
	for i, tk := range tasks {
		v, _ := nodes[0].rdb.HGet(ctx, nodes[0].chKey(tk.ChannelID), "deadline").Int64()
		at := time.UnixMilli(v).Add(time.Duration(rand.IntN(60)-30) * time.Millisecond)
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Until(at))
			answers[i].err = nodes[(i+1)%2].Callback(ctx, "p1", tk.ChannelID, success(`{"i":1}`))
		}()
	}
	wg.Wait()
	counts := map[string]int{}
	for i, tk := range tasks {
		var v View
		deadline := time.Now().Add(5 * time.Second)
		for {
			v, _ = nodes[1].Get(ctx, "p1", tk.ChannelID)
			if v.Status == StatusCompleted || v.Status == StatusError || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		hs := statuses(waitHistory(t, nodes[0], tk.ChannelID, 2))
		switch {
		case v.Status == StatusCompleted && answers[i].err == nil && hs == "ai_generated,completed":
			counts["callback"]++
		case v.Status == StatusError && conflictCode(answers[i].err) == "callback_timeout" && hs == "ai_generated,error":
			counts["timeout"]++
		default:
			t.Fatalf("channel %d: status %s, callback answer %v, room %s", i, v.Status, answers[i].err, hs)
		}
		_, tl, _ := nodes[0].Timeline(ctx, "p1", tk.ChannelID)
		outcomes := 0
		for _, e := range tl {
			if s := string(e); strings.Contains(s, `"type":"callback"`) || strings.Contains(s, `"type":"timeout"`) {
				outcomes++
			}
		}
		if outcomes != 1 {
			t.Fatalf("channel %d: %d outcomes on the timeline: %s", i, outcomes, tl)
		}
	}
	if n, _ := c.ZCard(ctx, nodes[0].dueKeys[0]).Result(); n != 0 {
		t.Errorf("%d deadlines left", n)
	}
	t.Logf("%d channels: %d settled by their callback, %d by their deadline", n, counts["callback"], counts["timeout"])
}

// A node that claimed a due deadline and died before settling it: another
// node fires it once the claim's lease runs out.
func TestClaimedDeadlineOfDeadNodeFires(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	h := hub.New(c, hub.Options{Prefix: prefix, Log: zerolog.Nop()})
	o := Options{Publisher: h, CallbackTimeout: 200 * time.Millisecond}
	gen := newService(t, c, prefix, answer(`{"a":1}`), o)
	gen.Start()
	ctx := context.Background()
	task := eventTask()
	if err := gen.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, gen, task.ChannelID, StatusAIGenerated)
	_ = gen.Shutdown(ctx)

	// The "dead node" claims the deadline as soon as it is due.
	var ids []string
	for len(ids) == 0 {
		var err error
		ids, err = claimDueScript.Run(ctx, c, []string{gen.dueKeys[0]}, time.Now().UnixMilli(), 10,
			time.Now().Add(700*time.Millisecond).UnixMilli()).StringSlice()
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	claimed := time.Now()
	live := newService(t, c, prefix, answer(`{}`), o)
	live.Start()
	time.Sleep(200 * time.Millisecond)
	if v, _ := live.Get(ctx, "p1", task.ChannelID); v.Status != StatusAIGenerated && time.Since(claimed) < 600*time.Millisecond {
		t.Fatalf("fired while another node's claim held it: %s", v.Status)
	}
	v := waitStatus(t, live, task.ChannelID, StatusError)
	if !strings.Contains(string(v.Message), CodeCallbackTimeout) {
		t.Errorf("message = %s", v.Message)
	}
	if hs := statuses(waitHistory(t, live, task.ChannelID, 2)); hs != "ai_generated,error" {
		t.Errorf("room history = %s", hs)
	}
}

// A callback's final message is built by callback.lua from the parts its
// generation stored and those the callback brings: byte for byte what
// encoding the whole message gives, for successes and errors, with
// characters JSON.stringify writes raw or escapes, no customer data, no
// task id; and, for a record generated by an earlier version (no parts:
// the caller reads them), the same.
func TestCallbackMessageFromParts(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	h := hub.New(c, hub.Options{Prefix: prefix, Log: zerolog.Nop()})
	const gen = `{"title":"<b>Ünïcode</b> & \u2028","n":[1.5,1e21,-0],"tab":"a\tb"}`
	s := newService(t, c, prefix, answer(gen), Options{Publisher: h})
	s.Start()
	ctx := context.Background()
	raw := func(s string) json.RawMessage {
		b, err := jscanon.Canonical([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name     string
		customer json.RawMessage
		cb       CallbackBody
		noParts  bool // generated by an earlier version: no cb_parts
	}{
		{name: "success", customer: json.RawMessage(`{"u":1}`), cb: CallbackBody{Data: raw(`{"id":7,"s":"é\n<>"}`),
			TaskID: raw(`"t1"`), Metadata: raw(`{"k":[true,null]}`)}},
		{name: "success without task id or customer data", cb: CallbackBody{Data: raw(`[1,"x"]`)}},
		{name: "error", customer: json.RawMessage(`{"2":"b","1":"a"}`), cb: CallbackBody{Error: "bad_input", Message: "It \"failed\" <here>"}},
		{name: "error without a message", cb: CallbackBody{Error: "bad_input"}},
		{name: "success on a record without parts", customer: json.RawMessage(`{"u":1}`), noParts: true,
			cb: CallbackBody{Data: raw(`{"id":8}`), TaskID: raw(`42`)}},
		{name: "error on a record without parts", noParts: true, cb: CallbackBody{Error: "bad_input", Message: "m"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			task := eventTask()
			task.CustomerData = tc.customer
			generated(t, s, task)
			if tc.noParts {
				if n, err := c.HDel(ctx, s.chKey(task.ChannelID), "cb_parts").Result(); err != nil || n != 1 {
					t.Fatalf("HDEL cb_parts = %d, %v", n, err)
				}
			}
			tc.cb.Canonical = raw(`{"case":"` + tc.name + `"}`)
			if err := s.Callback(ctx, "p1", task.ChannelID, tc.cb); err != nil {
				t.Fatal(err)
			}
			got, err := c.HGet(ctx, s.chKey(task.ChannelID), "message").Bytes()
			if err != nil {
				t.Fatal(err)
			}
			var stamp struct{ Timestamp string }
			if err := json.Unmarshal(got, &stamp); err != nil || stamp.Timestamp == "" {
				t.Fatalf("message %s: %v", got, err)
			}
			cust := tc.customer
			if cust == nil { // the stored task's customer_data is null
				cust = json.RawMessage("null")
			}
			var m any = roomCompleted{Status: StatusCompleted, ChannelID: task.ChannelID, EventName: "new_thing",
				Data: tc.cb.Data, AIResponse: aiResponse{json.RawMessage(gen)}, CustomerData: cust,
				TaskID: orNull(tc.cb.TaskID), CallbackMetadata: orNull(tc.cb.Metadata), Timestamp: stamp.Timestamp}
			if tc.cb.Error != "" {
				text := tc.cb.Message
				if text == "" {
					text = tc.cb.Error
				}
				m = roomFailed{Status: StatusError, ChannelID: task.ChannelID, EventName: "new_thing",
					Error: ErrorBody{Message: text, Code: tc.cb.Error}, CustomerData: cust, Timestamp: stamp.Timestamp}
			}
			want, err := encode(m)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("message\n got %s\nwant %s", got, want)
			}
			if hs := waitHistory(t, s, task.ChannelID, 2); hs[1]["status"] != string(messageStatus(want)) {
				t.Errorf("room's final message = %v", hs[1])
			}
		})
	}
}

// A callback whose deadline entry cannot be brought forward (here the
// deadline set is of the wrong type, so its ZADD fails) while its
// compare-and-set settles the channel, in the same round trip on one
// Redis, settles before it answers: the script's outcome decides, not the
// round trip's first error, and nothing would redo it within seconds.
// On a Cluster the entry's round trip comes first, and its failure is
// answered with nothing changed.
func TestCallbackWhoseDeadlineEntryCannotMove(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	h := hub.New(c, hub.Options{Prefix: prefix, Log: zerolog.Nop()})
	s := newService(t, c, prefix, answer(`{"a":1}`), Options{Publisher: h})
	s.Start()
	ctx := context.Background()
	task := eventTask()
	generated(t, s, task)
	due := s.dueKey(task.ChannelID)
	if err := c.Del(ctx, due).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, due, "not a sorted set", 0).Err(); err != nil {
		t.Fatal(err)
	}
	err := s.Callback(ctx, "p1", task.ChannelID, success(`{"ok":1}`))
	st, _ := c.HGet(ctx, s.chKey(task.ChannelID), "status").Result()
	if rdb.IsCluster(c) {
		if err == nil || st != string(StatusAIGenerated) {
			t.Errorf("on a Cluster: answer %v, status %q; want an error and ai_generated", err, st)
		}
		return
	}
	// The settlement's last step (the entry's removal) fails on the same
	// key: the answer is that error, after the room got the message.
	if err == nil || strings.Contains(err.Error(), "accept callback") {
		t.Errorf("answer %v; want the settlement's own error", err)
	}
	if hs := statuses(history(t, s, task.ChannelID)); st != string(StatusCompleted) || hs != "ai_generated,completed" {
		t.Errorf("when answered: status %q, room history %s; want completed, ai_generated,completed", st, hs)
	}
}

// racingDispatcher delivers the callback while the generation's side
// effects are still running (between the room's ai_generated message and
// the webhook's enqueue), as a backend that calls back at once after a
// synchronous answer could.
type racingDispatcher struct {
	recorder
	s      *Service
	once   sync.Once
	called bool  // under recorder.mu, as err is
	err    error // the callback's: the task reads completed before it is set
}

func (d *racingDispatcher) Enqueue(ctx context.Context, ev dispatch.Event) error {
	d.once.Do(func() {
		err := d.s.Callback(ctx, ev.ProjectID, ev.ChannelID, success(`{"fast":true}`))
		d.mu.Lock()
		d.err, d.called = err, true
		d.mu.Unlock()
	})
	return d.recorder.Enqueue(ctx, ev)
}

// A callback that overtakes the generation's side effects: the room still
// reads ai_generated then completed, the deadline entry is gone, the log
// index says completed, and the webhook enqueued after the settle is
// cancelled.
func TestCallbackOvertakingGeneration(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	h := hub.New(c, hub.Options{Prefix: prefix, Log: zerolog.Nop()})
	d := &racingDispatcher{}
	s := newService(t, c, prefix, answer(`{"a":1}`), Options{Publisher: h, Dispatcher: d})
	d.s = s
	s.Start()
	ctx := context.Background()
	task := eventTask()
	if err := s.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, task.ChannelID, StatusCompleted)
	for wait := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		d.mu.Lock()
		called, err := d.called, d.err
		d.mu.Unlock()
		if err != nil {
			t.Fatalf("callback: %v", err)
		}
		if called {
			break
		}
		if time.Now().After(wait) {
			t.Fatal("the callback did not return")
		}
	}
	if hs := statuses(waitHistory(t, s, task.ChannelID, 2)); hs != "ai_generated,completed" {
		t.Fatalf("room history = %s", hs)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, _ := c.ZCard(ctx, s.dueKeys[0]).Result()
		aw, _ := c.ZScore(ctx, s.logKeyOf("p1", "st", "ai_generated"), task.ChannelID).Result()
		done, _ := c.ZScore(ctx, s.logKeyOf("p1", "st", "completed"), task.ChannelID).Result()
		d.mu.Lock()
		cancels, events := len(d.cancels), len(d.events)
		d.mu.Unlock()
		if n == 0 && aw == 0 && done > 0 && events == 1 && cancels >= 2 {
			break // the settle's own cancel (nothing yet) and the one after the enqueue
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the race: %d deadline entries, awaiting-index score %v, completed-index score %v, %d events, %d cancels",
				n, aw, done, events, cancels)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A node that answered a callback and died before its settlement (the
// index move, the retries cancelled, and with a publisher that is not a
// ScriptPublisher the room's final message, all sent after the answer)
// leaves the channel's deadline entry under a claim's lease: another
// node's poller settles the channel when it runs out. (The hub publishes
// the final message with the compare-and-set: the room has it at once.)
func TestSettlementLostWithItsNodeIsRedone(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		pub    func(*hub.Hub) Publisher
		before string // the room's history once answered
	}{
		{"the hub", func(h *hub.Hub) Publisher { return h }, "ai_generated,completed"},
		{"a publisher that is not a ScriptPublisher", func(h *hub.Hub) Publisher { return plainPublisher{h} }, "ai_generated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, prefix := rdbtest.New(t)
			h := hub.New(c, hub.Options{Prefix: prefix, Log: zerolog.Nop(), Record: RecordKey(prefix)})
			a := newService(t, c, prefix, answer(`{"a":1}`), Options{Publisher: tc.pub(h)})
			ctx := context.Background()
			task := eventTask()
			if err := a.Submit(ctx, task); err != nil {
				t.Fatal(err)
			}
			a.Start()
			waitStatus(t, a, task.ChannelID, StatusAIGenerated)
			awaitAnnounced(t, a, task.ChannelID) // else a's own generation would settle it, seeing the outcome
			a.StopClaiming()                     // its poller too: only b's may settle it
			// The answer, without the settlement that follows it.
			if d, err := a.accept(ctx, "p1", task.ChannelID, success(`{"ok":1}`)); err != nil || d == nil {
				t.Fatalf("accept: %v, %v", d, err)
			}
			if got := statuses(history(t, a, task.ChannelID)); got != tc.before {
				t.Fatalf("room history before any settlement = %s, want %s", got, tc.before)
			}
			b := newService(t, c, prefix, answer(`{"a":1}`), Options{Publisher: tc.pub(h)})
			b.Start()
			awaitSettledWithin(t, b, task.ChannelID, 6*deadlineLease) // due a lease after the claim; room for a loaded machine
			if got := statuses(history(t, b, task.ChannelID)); got != "ai_generated,completed" {
				t.Errorf("room history = %s, want ai_generated,completed once", got)
			}
			if v := waitStatus(t, b, task.ChannelID, StatusCompleted); v.Status != StatusCompleted {
				t.Errorf("status %s", v.Status)
			}
		})
	}
}

// finalCounter is the hub, counting the final messages sent through
// PublishIn (a settlement's publish).
type finalCounter struct {
	*hub.Hub
	finals atomic.Int64
}

func (h *finalCounter) PublishIn(ctx context.Context, p redis.Pipeliner, pid, cid string, msg json.RawMessage) func() (int64, error) {
	if st := messageStatus(msg); st == StatusCompleted || st == StatusError {
		h.finals.Add(1)
	}
	return h.Hub.PublishIn(ctx, p, pid, cid, msg)
}

// With the hub as publisher (a ScriptPublisher), a callback that settles
// a channel whose room holds the generation's messages publishes the final
// message with its compare-and-set: the room has it when the callback is
// answered, once, and the settlement does not send it again. (A callback
// that overtook the generation's own publish leaves it to the settlement,
// after the generation's messages: TestCallbackOvertakingGeneration.)
func TestCallbackPublishesWithTheOutcome(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	h := &finalCounter{Hub: hub.New(c, hub.Options{Prefix: prefix, Log: zerolog.Nop(), Record: RecordKey(prefix)})}
	s := newService(t, c, prefix, answer(`{"a":1}`), Options{Publisher: h})
	s.Start()
	ctx := context.Background()
	task := eventTask()
	generated(t, s, task)
	awaitAnnounced(t, s, task.ChannelID)
	// The room's pub/sub channel, as a node with a socket joined to it
	// subscribes (a shard channel on a Cluster).
	room := prefix + ":room:{" + task.ChannelID + "}"
	var sub *redis.PubSub
	if rdb.IsCluster(c) {
		sub = c.SSubscribe(ctx, room)
	} else {
		sub = c.Subscribe(ctx, room)
	}
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	if err := s.Callback(ctx, "p1", task.ChannelID, success(`{"ok":1}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-sub.Channel():
		if !strings.Contains(m.Payload, `"status":"completed"`) {
			t.Errorf("the room's pub/sub carried %s", m.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Error("nothing on the room's pub/sub channel")
	}
	if got := statuses(history(t, s, task.ChannelID)); got != "ai_generated,completed" {
		t.Errorf("room history when answered = %s, want ai_generated,completed", got)
	}
	awaitSettled(t, s, task.ChannelID)
	if got := statuses(history(t, s, task.ChannelID)); got != "ai_generated,completed" {
		t.Errorf("room history once settled = %s", got)
	}
	if n := h.finals.Load(); n != 0 {
		t.Errorf("the settlement published the final message %d times again", n)
	}
	if got := entriesOf(t, s, task.ChannelID, func(e Entry) string { return e.Type }); strings.Count(got, "broadcast") != 2 {
		t.Errorf("timeline = %s, want one broadcast entry per message", got)
	}
}

// awaitAnnounced waits until the generation's messages are noted as sent
// to the room (announce.lua), which its side effects do after the status.
func awaitAnnounced(tb testing.TB, s *Service, cid string) {
	tb.Helper()
	for end := time.Now().Add(5 * time.Second); !s.rdb.HExists(context.Background(), s.chKey(cid), "announced").Val(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(end) {
			tb.Fatalf("channel %s: the generation's messages were not noted as sent", cid)
		}
	}
}

// plainPublisher is the hub as a Publisher only (not a ScriptPublisher).
type plainPublisher struct{ Publisher }

// refusingCanceller is a dispatcher whose cancellations fail in Redis.
type refusingCanceller struct {
	*recorder
	key string
}

func (r refusingCanceller) CancelIn(ctx context.Context, p redis.Pipeliner, cs []dispatch.Cancellation) (*dispatch.Cancelling, error) {
	_, _ = r.recorder.CancelIn(ctx, p, cs)
	p.Eval(ctx, `return redis.error_reply('ERR refused')`, []string{r.key})
	return nil, nil
}

// The webhook retries' cancellation goes with the settlement's publish
// (one round trip on one Redis); when it fails, the settlement still
// completes: the retries are left to run out.
func TestSettlementOutlivesAFailedCancellation(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	rec := &recorder{}
	h := hub.New(c, hub.Options{Prefix: prefix, Log: zerolog.Nop()})
	s := newService(t, c, prefix, answer(`{"title":"Inception"}`),
		Options{Publisher: h, Dispatcher: refusingCanceller{rec, prefix + ":{refused}:x"}})
	s.Start()
	task := eventTask()
	ctx := context.Background()
	generated(t, s, task)
	if err := s.Callback(ctx, "p1", task.ChannelID, success(`{"id":7}`)); err != nil {
		t.Fatal(err)
	}
	awaitSettled(t, s, task.ChannelID)
	if got := statuses(history(t, s, task.ChannelID)); got != "ai_generated,completed" {
		t.Errorf("room history = %s", got)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.cancels) == 0 {
		t.Error("no cancellation was asked for")
	}
}

// Once the generation's messages have reached the room (the generation
// notes it: announced), a settlement publishes its final message alone,
// whether a callback or the deadline settles; before that note, or once the
// room may have let them go (the note older than half the retention), it
// sends the generation's messages again first (the room drops those it
// has). Either way the timeline logs each message's broadcast once, in
// order.
func TestSettlementSkipsAnnouncedMessages(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		note     string // the note rewritten before the settlement: "" as it is, "-" taken out, "overtaken" as if the generation's publish had not run yet
		deadline bool   // settled by the deadline instead of a callback
		want     string
	}{
		{"callback", "", false, "ai_generated,completed"},
		{"callback before the note", "-", false, "ai_generated,ai_generated,completed"},
		{"callback after the room's retention", "1000", false, "ai_generated,ai_generated,completed"},
		{"callback overtaking the generation's publish", "overtaken", false, "ai_generated,ai_generated,completed"},
		{"deadline", "", true, "ai_generated,error"},
		{"deadline before the note", "-", true, "ai_generated,ai_generated,error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			o := Options{Publisher: rec}
			if tc.deadline { // long enough for the generation to note its messages first, on a loaded machine too
				o.CallbackTimeout = 2 * time.Second
			}
			s := newService(t, c, prefix+":"+strings.ReplaceAll(tc.name, " ", "-"), answer(`{"a":1}`), o)
			s.Start()
			task := eventTask()
			if err := s.Submit(ctx, task); err != nil {
				t.Fatal(err)
			}
			for end := time.Now().Add(5 * time.Second); ; time.Sleep(2 * time.Millisecond) {
				if v, _ := c.HGet(ctx, s.chKey(task.ChannelID), "announced").Int64(); v > 0 {
					break
				}
				if time.Now().After(end) {
					t.Fatal("the generation's messages were not noted as sent")
				}
			}
			switch tc.note {
			case "":
			case "-":
				c.HDel(ctx, s.chKey(task.ChannelID), "announced")
			case "overtaken": // no note, and no broadcast of ai_generated logged yet
				tl, _ := c.HGet(ctx, s.chKey(task.ChannelID), "tl").Result()
				var kept []string
				for _, e := range strings.Split(tl, "\n") {
					if !strings.Contains(e, `"type":"broadcast"`) {
						kept = append(kept, e)
					}
				}
				c.HDel(ctx, s.chKey(task.ChannelID), "announced", "bc:ai_generated")
				c.HSet(ctx, s.chKey(task.ChannelID), "tl", strings.Join(kept, "\n"))
			default:
				c.HSet(ctx, s.chKey(task.ChannelID), "announced", tc.note)
			}
			if !tc.deadline {
				if err := s.Callback(ctx, "p1", task.ChannelID, success(`{"id":7}`)); err != nil {
					t.Fatal(err)
				}
			}
			awaitSettled(t, s, task.ChannelID)
			var got []string
			for end := time.Now().Add(5 * time.Second); ; time.Sleep(2 * time.Millisecond) {
				rec.mu.Lock()
				got = got[:0]
				for _, m := range rec.published {
					got = append(got, string(messageStatus(json.RawMessage(m))))
				}
				rec.mu.Unlock()
				if len(got) > 0 && strings.Count(strings.Join(got, ","), ",") >= strings.Count(tc.want, ",") || time.Now().After(end) {
					break
				}
			}
			if s := strings.Join(got, ","); s != tc.want {
				t.Errorf("published %s, want %s", s, tc.want)
			}
			broadcasts := func(e Entry) string {
				if e.Type != "broadcast" {
					return ""
				}
				return string(e.Status)
			}
			final := tc.want[strings.LastIndex(tc.want, ",")+1:]
			if got := entriesOf(t, s, task.ChannelID, broadcasts); got != "ai_generated,"+final {
				t.Errorf("timeline's broadcasts: %s, want ai_generated,%s", got, final)
			}
		})
	}
}

// entriesOf is project p1's channel cid's timeline, each entry as pick
// tells it (entries it tells as "" left out), joined by commas.
func entriesOf(t *testing.T, s *Service, cid string, pick func(Entry) string) string {
	t.Helper()
	_, tl, err := s.Timeline(context.Background(), "p1", cid)
	if err != nil {
		t.Fatalf("timeline: %v", err)
	}
	var out []string
	for _, raw := range tl {
		var e Entry
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatalf("timeline entry %s: %v", raw, err)
		}
		if x := pick(e); x != "" {
			out = append(out, x)
		}
	}
	return strings.Join(out, ",")
}

// On one Redis a settlement's last steps (queued to fold, compacted, its
// deadline entry removed) ride the next settlement's round trip, and
// Shutdown sends what is still held; an unguarded settlement (its entry
// not under a lease) sends its own before the callback is answered.
func TestSettlementsLastStepsRideTheNext(t *testing.T) {
	t.Parallel()
	s, c, _, _ := roomService(t, Options{})
	if rdb.IsCluster(c) {
		t.Skip("on a Cluster a settlement sends its last steps itself")
	}
	s.tidying.mu.Lock()
	s.tidying.delay = time.Hour // no flush of its own within the test
	s.tidying.mu.Unlock()
	ctx := context.Background()
	a, b, u := eventTask(), eventTask(), eventTask()
	for _, task := range []*Task{a, b, u} {
		generated(t, s, task)
	}
	waiting := func(cid string) bool { return s.rdb.ZScore(ctx, s.dueKey(cid), cid).Err() == nil }
	live := func(cid string) bool { return c.HExists(ctx, s.chKey(cid), "task").Val() }
	// held: the settler has run the channel's settlement and holds its
	// last steps (the room has the final message sooner: the
	// compare-and-set publishes it).
	held := func(cid string) func() bool {
		return func() bool {
			s.tidying.mu.Lock()
			defer s.tidying.mu.Unlock()
			return slices.ContainsFunc(s.tidying.pending, func(d settlement) bool { return d.ref.cid == cid })
		}
	}

	// A callback whose entry cannot be brought forward to a lease (due
	// sooner) settles before it answers, its last steps included: no
	// poller would redo them within seconds.
	if err := c.ZAdd(ctx, s.dueKey(u.ChannelID), redis.Z{Score: float64(time.Now().Add(2 * time.Second).UnixMilli()),
		Member: u.ChannelID}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Callback(ctx, "p1", u.ChannelID, success(`{"n":3}`)); err != nil {
		t.Fatal(err)
	}
	if waiting(u.ChannelID) || live(u.ChannelID) {
		t.Error("an unguarded settlement's last steps were held")
	}

	if err := s.Callback(ctx, "p1", a.ChannelID, success(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	if h := waitHistory(t, s, a.ChannelID, 2); statuses(h) != "ai_generated,completed" {
		t.Fatalf("room history of a = %s", statuses(h))
	}
	until(t, "a's last steps held", held(a.ChannelID))
	if !waiting(a.ChannelID) || !live(a.ChannelID) {
		t.Fatal("a's last steps were sent alone, before another settlement")
	}
	if err := s.Callback(ctx, "p1", b.ChannelID, success(`{"n":2}`)); err != nil {
		t.Fatal(err)
	}
	until(t, "a's last steps sent with b's settlement", func() bool { return !waiting(a.ChannelID) && !live(a.ChannelID) })
	if c.ZScore(ctx, s.foldKeys[0], a.ChannelID).Err() != nil {
		t.Error("a is not queued to fold")
	}
	waitHistory(t, s, b.ChannelID, 2)
	until(t, "b's last steps held", held(b.ChannelID))
	if !waiting(b.ChannelID) {
		t.Fatal("b's last steps were sent alone")
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if waiting(b.ChannelID) || live(b.ChannelID) || c.ZScore(ctx, s.foldKeys[0], b.ChannelID).Err() != nil {
		t.Error("Shutdown left b's last steps unsent")
	}
}
