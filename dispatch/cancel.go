package dispatch

import (
	"context"
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
// log with its why. Idempotent. Those of a batch (a settler's) go in two
// round trips, whatever their number. With more than one partition, a
// delivery an earlier version wrote (in partition 0) is cancelled too.
func (e *Engine) Cancel(ctx context.Context, cs []Cancellation) error {
	type target struct {
		c    *Cancellation
		hook string // the endpoint's id
		id   string // the delivery's
		cmds []*redis.Cmd
	}
	var targets []target
	for i := range cs {
		hooks, err := e.o.Endpoints.ProjectWebhooks(ctx, cs[i].Event.ProjectID)
		if err != nil {
			return fmt.Errorf("load endpoints: %w", err)
		}
		for _, w := range hooks {
			targets = append(targets, target{c: &cs[i], hook: w.ID, id: DeliveryID(cs[i].Event.Type, cs[i].Event.ChannelID, w.ID)})
		}
	}
	if len(targets) == 0 {
		return nil
	}
	at := e.o.Now().UTC().Format(wire.TimeFormat)
	ttl := int64(e.o.HotWindow / time.Second)
	err := e.pipelined(ctx, func(p redis.Pipeliner) {
		for i := range targets {
			t := &targets[i]
			for _, pt := range e.hookParts(t.hook) {
				t.cmds = append(t.cmds, cancelScript.Eval(ctx, p, []string{pt.dKey(t.id), pt.attKey(t.id),
					pt.dueOf(t.c.Event.ProjectID), pt.waitKey(t.hook)}, t.id, t.c.Why, at, ttl))
			}
		}
	})
	if err != nil {
		return fmt.Errorf("cancel deliveries: %w", err)
	}
	var logs logBatch
	for _, t := range targets {
		note := "retries cancelled: " + t.c.Why
		got := cancelNothing
		for _, c := range t.cmds {
			got = max(got, decodeCancel(c))
		}
		switch got {
		case cancelNothing:
			continue
		case cancelMarked:
			note += " (the attempt under way ends it)"
		}
		ev := t.c.Event
		logs.add(ev.ChannelID, ev.Type, wire.MustJSON(cancelEntry{At: at, Type: "delivery_cancelled", DeliveryID: t.id,
			WebhookID: t.hook, Event: ev.Type, Reason: note}))
		e.m.cancelled.Inc()
	}
	if len(logs.cids) == 0 {
		return nil
	}
	return e.pipelined(ctx, func(p redis.Pipeliner) { e.writeLogs(ctx, p, &logs) })
}

type cancelEntry struct {
	At         string `json:"at"`
	Type       string `json:"type"`
	DeliveryID string `json:"delivery_id"`
	WebhookID  string `json:"webhook_id"`
	Event      string `json:"event"`
	Reason     string `json:"reason"`
}
