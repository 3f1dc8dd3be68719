package dispatch

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/wire"
)

// Cancel stops the retries of ev's deliveries (ev.Type for ev.ChannelID,
// one per endpoint of the project) that have not succeeded: waiting ones
// at once, one under way when its attempt ends. Each cancellation is on
// the channel's delivery log with why. Idempotent. With more than one
// partition, a delivery an earlier version wrote (in partition 0) is
// cancelled too.
func (e *Engine) Cancel(ctx context.Context, ev Event, why string) error {
	hooks, err := e.o.Endpoints.ProjectWebhooks(ctx, ev.ProjectID)
	if err != nil {
		return fmt.Errorf("load endpoints: %w", err)
	}
	if len(hooks) == 0 {
		return nil
	}
	at := e.o.Now().UTC().Format(wire.TimeFormat)
	ttl := int64(e.o.HotWindow / time.Second)
	ids := make([]string, len(hooks))
	cmds := make([][]*redis.Cmd, len(hooks))
	err = e.pipelined(ctx, func(p redis.Pipeliner) {
		for i, w := range hooks {
			ids[i] = DeliveryID(ev.Type, ev.ChannelID, w.ID)
			for _, pt := range e.hookParts(w.ID) {
				cmds[i] = append(cmds[i], cancelScript.Eval(ctx, p, []string{pt.dKey(ids[i]), pt.attKey(ids[i]), pt.dueOf(ev.ProjectID),
					pt.waitKey(w.ID)}, ids[i], why, at, ttl))
			}
		}
	})
	if err != nil {
		return fmt.Errorf("cancel deliveries: %w", err)
	}
	var logs logBatch
	for i, cs := range cmds {
		note := "retries cancelled: " + why
		got := cancelNothing
		for _, c := range cs {
			got = max(got, decodeCancel(c))
		}
		switch got {
		case cancelNothing:
			continue
		case cancelMarked:
			note += " (the attempt under way ends it)"
		}
		logs.add(ev.ChannelID, ev.Type, wire.MustJSON(cancelEntry{At: at, Type: "delivery_cancelled", DeliveryID: ids[i],
			WebhookID: hooks[i].ID, Event: ev.Type, Reason: note}))
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
