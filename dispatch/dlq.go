package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/internal/wire"
	"github.com/riverhub/riverhub/project"
)

// Delivery is a delivery as the console shows it.
type Delivery struct {
	ID            string          `json:"id"` // also its webhook-id
	WebhookID     string          `json:"webhook_id"`
	ChannelID     string          `json:"channel_id"`
	Event         string          `json:"event"`
	Status        string          `json:"status"` // pending, delivering, retrying, succeeded, dead, cancelled
	Attempts      int64           `json:"attempts"`
	Replays       int64           `json:"replays"`
	CreatedAt     string          `json:"created_at"`
	DeadAt        *string         `json:"dead_at"`
	NextAttemptAt *string         `json:"next_attempt_at"`
	LastStatus    *int            `json:"last_status_code"`
	LastError     string          `json:"last_error,omitempty"`
	Payload       json.RawMessage `json:"payload"`
	History       []Attempt       `json:"history,omitempty"`
}

var deliveryFields = []string{"project_id", "webhook_id", "channel_id", "event", "status", "attempts", "replays",
	"created_at", "dead_at", "next_at", "last_status", "last_error", "body"}

func msString(ms string) *string {
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil || n == 0 {
		return nil
	}
	s := time.UnixMilli(n).UTC().Format(wire.TimeFormat)
	return &s
}

// decode builds a Delivery from an HMGET of deliveryFields; ok is false if
// it does not exist or belongs to another project.
func decodeDelivery(id, pid string, v []any) (Delivery, bool) {
	s := func(i int) string { x, _ := v[i].(string); return x }
	if s(0) == "" || s(0) != pid {
		return Delivery{}, false
	}
	d := Delivery{ID: id, WebhookID: s(1), ChannelID: s(2), Event: s(3), Status: s(4), CreatedAt: s(7),
		DeadAt: msString(s(8)), NextAttemptAt: msString(s(9)), LastError: s(11), Payload: json.RawMessage(s(12))}
	d.Attempts, _ = strconv.ParseInt(s(5), 10, 64)
	d.Replays, _ = strconv.ParseInt(s(6), 10, 64)
	if n, err := strconv.Atoi(s(10)); err == nil && n > 0 {
		d.LastStatus = &n
	}
	if len(d.Payload) == 0 {
		d.Payload = json.RawMessage("null")
	}
	return d, true
}

// Get returns one delivery of the project with its attempt history.
func (e *Engine) Get(ctx context.Context, pid, id string) (Delivery, error) {
	var hm *redis.SliceCmd
	var att *redis.StringSliceCmd
	_, err := e.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		hm = p.HMGet(ctx, e.dKey(id), deliveryFields...)
		att = p.LRange(ctx, e.attKey(id), 0, -1)
		return nil
	})
	if err != nil {
		return Delivery{}, fmt.Errorf("get delivery: %w", err)
	}
	d, ok := decodeDelivery(id, pid, hm.Val())
	if !ok {
		return Delivery{}, apperr.NotFoundf("delivery %q not found", id)
	}
	for _, raw := range att.Val() {
		var a Attempt
		if json.Unmarshal([]byte(raw), &a) == nil {
			d.History = append(d.History, a)
		}
	}
	return d, nil
}

// DeadLetters lists the project's dead deliveries (one endpoint's when
// webhookID is set), newest first. The cursor is "<dead ms>:<id>".
func (e *Engine) DeadLetters(ctx context.Context, pid, webhookID string, p project.ListParams) (project.Page[Delivery], error) {
	p, err := p.Normalize()
	if err != nil {
		return project.Page[Delivery]{}, err
	}
	key := e.dlqKey(pid)
	if webhookID != "" {
		key = e.dlqHookKey(pid, webhookID)
	}
	// Members outlive their records by at most the DLQ retention: trim.
	cutoff := e.o.Now().Add(-e.o.DLQRetention).UnixMilli()
	e.rdb.ZRemRangeByScore(ctx, key, "-inf", "("+strconv.FormatInt(cutoff, 10))
	max, afterID := "+inf", ""
	if p.Cursor != "" {
		c, err := project.DecodeCursor(p.Cursor)
		if err != nil {
			return project.Page[Delivery]{}, err
		}
		score, id, ok := strings.Cut(c, ":")
		if _, perr := strconv.ParseInt(score, 10, 64); !ok || perr != nil {
			return project.Page[Delivery]{}, apperr.Invalidf("cursor is malformed")
		}
		max, afterID = score, id
	}
	page := project.Page[Delivery]{Items: []Delivery{}}
	lastScore := ""
	for offset := int64(0); len(page.Items) <= p.Limit; {
		zs, err := e.rdb.ZRevRangeByScoreWithScores(ctx, key, &redis.ZRangeBy{Max: max, Min: "-inf", Offset: offset, Count: int64(p.Limit + 1)}).Result()
		if err != nil {
			return project.Page[Delivery]{}, fmt.Errorf("list dead letters: %w", err)
		}
		if len(zs) == 0 {
			break
		}
		offset += int64(len(zs))
		cmds := make([]*redis.SliceCmd, len(zs))
		_, err = e.rdb.Pipelined(ctx, func(pp redis.Pipeliner) error {
			for i, z := range zs {
				cmds[i] = pp.HMGet(ctx, e.dKey(z.Member.(string)), deliveryFields...)
			}
			return nil
		})
		if err != nil {
			return project.Page[Delivery]{}, fmt.Errorf("list dead letters: %w", err)
		}
		for i, z := range zs {
			id := z.Member.(string)
			score := strconv.FormatInt(int64(z.Score), 10)
			// Equal scores come in reverse id order: skip what the
			// previous page showed.
			if afterID != "" && score == max && id >= afterID {
				continue
			}
			d, ok := decodeDelivery(id, pid, cmds[i].Val())
			if !ok || d.Status != "dead" {
				e.rdb.ZRem(ctx, key, id) // expired or replayed meanwhile
				continue
			}
			if len(page.Items) == p.Limit {
				c := project.EncodeCursor(lastScore + ":" + page.Items[p.Limit-1].ID)
				page.NextCursor = &c
				return page, nil
			}
			page.Items = append(page.Items, d)
			lastScore = score
		}
	}
	return page, nil
}

// Replay gives a dead delivery a fresh round of attempts, keeping its id
// and history. A delivery that is not dead is a conflict.
func (e *Engine) Replay(ctx context.Context, pid, id string) error {
	d, err := e.Get(ctx, pid, id)
	if err != nil {
		return err
	}
	n, err := e.replay(ctx, pid, []Delivery{d})
	if err != nil {
		return err
	}
	if n == 0 {
		return apperr.New(apperr.Conflict, "not_dead_lettered", "delivery %s is %s, not dead-lettered", id, d.Status)
	}
	return nil
}

// ReplayAll replays every dead delivery of the project (of one endpoint
// when webhookID is set) and returns how many.
func (e *Engine) ReplayAll(ctx context.Context, pid, webhookID string) (int, error) {
	total := 0
	for {
		page, err := e.DeadLetters(ctx, pid, webhookID, project.ListParams{Limit: 500})
		if err != nil {
			return total, err
		}
		if len(page.Items) == 0 {
			return total, nil
		}
		n, err := e.replay(ctx, pid, page.Items)
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
}

func (e *Engine) replay(ctx context.Context, pid string, ds []Delivery) (int, error) {
	now := e.o.Now()
	at := wire.Stamp(now)
	cmds := make([]*redis.Cmd, len(ds))
	err := e.pipelined(ctx, func(p redis.Pipeliner) {
		for i, d := range ds {
			cmds[i] = replayScript.Eval(ctx, p, []string{e.dKey(d.ID), e.attKey(d.ID), e.dueOf(pid),
				e.dlqKey(pid), e.dlqHookKey(pid, d.WebhookID), e.projectsKey}, d.ID, now.UnixMilli(), pid)
		}
		if len(ds) > 0 {
			e.nudge(ctx, p, now, now)
		}
	})
	if err != nil {
		return 0, fmt.Errorf("replay: %w", err)
	}
	n := 0
	var logs logBatch
	for i, d := range ds {
		if ok, _ := decodeDone(cmds[i]); ok {
			n++
			logs.add(d.ChannelID, d.Event, wire.MustJSON(timelineEntry{At: at, Type: "replayed",
				DeliveryID: d.ID, WebhookID: d.WebhookID, Event: d.Event}))
		}
	}
	if len(logs.cids) > 0 {
		err = e.pipelined(ctx, func(p redis.Pipeliner) { e.writeLogs(ctx, p, &logs) })
	}
	if n > 0 {
		e.poke(now)
	}
	return n, err
}

// Discard deletes a dead delivery.
func (e *Engine) Discard(ctx context.Context, pid, id string) error {
	d, err := e.Get(ctx, pid, id)
	if err != nil {
		return err
	}
	done, err := decodeDone(discardScript.Run(ctx, e.rdb, []string{e.dKey(id), e.attKey(id), e.dlqKey(pid), e.dlqHookKey(pid, d.WebhookID)}, id))
	if err != nil {
		return fmt.Errorf("discard: %w", err)
	}
	if !done {
		return apperr.New(apperr.Conflict, "not_dead_lettered", "delivery %s is %s, not dead-lettered", id, d.Status)
	}
	return nil
}
