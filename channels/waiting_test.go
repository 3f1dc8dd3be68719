package channels

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// waitingRunner makes tasks whose message is "wait" say they wait, then
// block until release is closed; others answer at once.
func waitingRunner(release <-chan struct{}) runnerFunc {
	return func(ctx context.Context, req ai.Request) (ai.Result, error) {
		if req.Messages[0].Content == "wait" {
			req.OnWait(ai.Wait{Provider: "openai", Model: "gpt", Reason: ai.WaitRateLimit})
			select {
			case <-release:
			case <-ctx.Done():
				return ai.Result{}, ctx.Err()
			}
		}
		return answer(`{"ok":true}`)(ctx, req)
	}
}

func taskSaying(s string) *Task {
	t := newTask()
	t.Messages = []ai.Message{{Role: "user", Content: s}}
	return t
}

// A task waiting for a provider gives its worker back: with one worker,
// the tasks behind it run meanwhile; its wait is on the timeline.
func TestWaitingTaskGivesBackItsWorker(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	release := make(chan struct{})
	s := newService(t, c, prefix, waitingRunner(release), Options{Workers: 1})
	ctx := context.Background()
	waiter := taskSaying("wait")
	if err := s.Submit(ctx, waiter); err != nil {
		t.Fatal(err)
	}
	s.Start()
	waitStatus(t, s, waiter.ChannelID, StatusGenerating)
	for range 3 {
		other := taskSaying("go")
		if err := s.Submit(ctx, other); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, s, other.ChannelID, StatusSuccess)
	}
	if n := s.waiting.Load(); n != 1 {
		t.Errorf("waiting = %d, want 1", n)
	}
	close(release)
	waitStatus(t, s, waiter.ChannelID, StatusSuccess)
	deadline := time.Now().Add(2 * time.Second)
	for s.waiting.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := s.waiting.Load(); n != 0 {
		t.Errorf("waiting = %d after the task finished, want 0", n)
	}
	_, tl, err := s.Timeline(ctx, "p1", waiter.ChannelID)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, e := range tl {
		var en Entry
		_ = json.Unmarshal(e, &en)
		if en.Type == "waiting" {
			found = en.Provider == "openai" && en.Reason == ai.WaitRateLimit
		}
	}
	if !found {
		t.Errorf("no waiting entry (openai, rate_limit) on the timeline: %s", tl)
	}
}

// Beyond MaxWaiting, a waiting task keeps its worker: with one worker and
// room for one waiting task, a second waiting task holds the worker and
// the task behind it waits too.
func TestWaitingBeyondTheCapKeepsTheWorker(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	release := make(chan struct{})
	s := newService(t, c, prefix, waitingRunner(release), Options{Workers: 1, MaxWaiting: 1})
	ctx := context.Background()
	s.Start()
	first, second, third := taskSaying("wait"), taskSaying("wait"), taskSaying("go")
	for _, tk := range []*Task{first, second} {
		if err := s.Submit(ctx, tk); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, s, tk.ChannelID, StatusGenerating)
	}
	if err := s.Submit(ctx, third); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if v, _ := s.Get(ctx, "p1", third.ChannelID); v.Status != StatusPending {
		t.Errorf("third task is %q while the only worker is held by a waiting task, want pending", v.Status)
	}
	close(release)
	for _, tk := range []*Task{first, second, third} {
		waitStatus(t, s, tk.ChannelID, StatusSuccess)
	}
}
