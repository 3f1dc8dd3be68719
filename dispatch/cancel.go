package dispatch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/wire"
)

// Cancellation is what Cancel stops: the retries of Event's deliveries
// (Event.Type for Event.ChannelID; Event.Body unused), and why.
type Cancellation struct {
	Event Event
	Why   string
}

// Cancel stops the retries of each cancellation's deliveries (one per
// endpoint of the project) that have not succeeded: waiting ones at once,
// one under way when its attempt ends. Each is on its channel's delivery
// log with its why. Idempotent. Those of a batch go in two round trips,
// whatever their number: the second only when something was cancelled.
// With more than one partition, a delivery an earlier version wrote (in
// partition 0) is cancelled too. (A settler sends the first round trip with
// writes of its own, CancelIn; Cancel is what callers without a pipeline of
// their own use: the tests, today.)
func (e *Engine) Cancel(ctx context.Context, cs []Cancellation) error {
	var c *Cancelling
	var err error
	_ = e.pipelined(ctx, func(p redis.Pipeliner) { c, err = e.CancelIn(ctx, p, cs) }) // its error is the commands', in Log
	if err != nil {
		return err
	}
	return c.Log(ctx)
}

// Cancelling is a batch of cancellations queued in a pipeline.
type Cancelling struct {
	e       *Engine
	at      string
	targets []cancelTarget
}

type cancelTarget struct {
	c    *Cancellation
	hook string // the endpoint's id
	id   string // the delivery's
	cmds []*redis.Cmd
}

// CancelIn is Cancel's first round trip queued in p, for a caller that
// sends it with commands of its own: once p has run, Err says whether the
// cancellations went through and Log logs what they cancelled. The error
// is the project's endpoints', read before anything is queued.
func (e *Engine) CancelIn(ctx context.Context, p redis.Pipeliner, cs []Cancellation) (*Cancelling, error) {
	c := &Cancelling{e: e, at: e.o.Now().UTC().Format(wire.TimeFormat)}
	for i := range cs {
		hooks, err := e.o.Endpoints.ProjectWebhooks(ctx, cs[i].Event.ProjectID)
		if err != nil {
			return nil, fmt.Errorf("load endpoints: %w", err)
		}
		for _, w := range hooks {
			c.targets = append(c.targets, cancelTarget{c: &cs[i], hook: w.ID, id: DeliveryID(cs[i].Event.Type, cs[i].Event.ChannelID, w.ID)})
		}
	}
	ttl := int64(e.o.HotWindow / time.Second)
	for i := range c.targets {
		t := &c.targets[i]
		for _, pt := range e.hookParts(t.hook) {
			t.cmds = append(t.cmds, cancelScript.Eval(ctx, p, []string{pt.dKey(t.id), pt.attKey(t.id),
				pt.dueOf(t.c.Event.ProjectID), pt.waitKey(t.hook)}, t.id, t.c.Why, c.at, ttl))
		}
	}
	return c, nil
}

// Err is the first error of the cancellations' commands, once their
// pipeline has run (nil when there were none, or c is nil).
func (c *Cancelling) Err() error {
	if c == nil {
		return nil
	}
	for _, t := range c.targets {
		for _, cmd := range t.cmds {
			if err := cmd.Err(); err != nil && !errors.Is(err, redis.Nil) {
				return fmt.Errorf("cancel deliveries: %w", err)
			}
		}
	}
	return nil
}

// Log puts what the cancellations did on their channels' delivery logs,
// in a round trip when something was cancelled, and reports Err first. A
// nil c logs nothing.
func (c *Cancelling) Log(ctx context.Context) error {
	if err := c.Err(); err != nil || c == nil {
		return err
	}
	var logs logBatch
	for _, t := range c.targets {
		note := "retries cancelled: " + t.c.Why
		got := cancelNothing
		for _, cmd := range t.cmds {
			got = max(got, decodeCancel(cmd))
		}
		switch got {
		case cancelNothing:
			continue
		case cancelMarked:
			note += " (the attempt under way ends it)"
		}
		ev := t.c.Event
		logs.add(ev.ChannelID, ev.Type, wire.MustJSON(cancelEntry{At: c.at, Type: "delivery_cancelled", DeliveryID: t.id,
			WebhookID: t.hook, Event: ev.Type, Reason: note}))
		c.e.m.cancelled.Inc()
	}
	if len(logs.cids) == 0 {
		return nil
	}
	return c.e.pipelined(ctx, func(p redis.Pipeliner) { c.e.writeLogs(ctx, p, &logs) })
}

type cancelEntry struct {
	At         string `json:"at"`
	Type       string `json:"type"`
	DeliveryID string `json:"delivery_id"`
	WebhookID  string `json:"webhook_id"`
	Event      string `json:"event"`
	Reason     string `json:"reason"`
}
