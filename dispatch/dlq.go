package dispatch

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
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

	part int // the partition that holds it
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

// Get returns one delivery of the project with its attempt history. The id
// does not say which partition holds the delivery (it is a hash of the
// event, channel and endpoint): every partition is read, in one round
// trip.
func (e *Engine) Get(ctx context.Context, pid, id string) (Delivery, error) {
	hm := make([]*redis.SliceCmd, len(e.parts))
	att := make([]*redis.StringSliceCmd, len(e.parts))
	_, err := e.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for k, pt := range e.parts {
			hm[k] = p.HMGet(ctx, pt.dKey(id), deliveryFields...)
			att[k] = p.LRange(ctx, pt.attKey(id), 0, -1)
		}
		return nil
	})
	if err != nil {
		return Delivery{}, fmt.Errorf("get delivery: %w", err)
	}
	var d Delivery
	found := -1
	for k := range e.parts {
		if d1, ok := decodeDelivery(id, pid, hm[k].Val()); ok {
			d, found = d1, k
			d.part = k
			break
		}
	}
	if found < 0 {
		return Delivery{}, apperr.NotFoundf("delivery %q not found", id)
	}
	for _, raw := range att[found].Val() {
		var a Attempt
		if json.Unmarshal([]byte(raw), &a) == nil {
			d.History = append(d.History, a)
		}
	}
	return d, nil
}

// DeadLetters lists the project's dead deliveries (one endpoint's when
// webhookID is set), newest first. The cursor is "<dead ms>:<id>". Each
// partition holds a set of them (the endpoint's partition and partition 0,
// for one endpoint): the page merges the sets, each read as far as the
// page needs, the reads of all partitions in the same round trips.
func (e *Engine) DeadLetters(ctx context.Context, pid, webhookID string, p project.ListParams) (project.Page[Delivery], error) {
	p, err := p.Normalize()
	if err != nil {
		return project.Page[Delivery]{}, err
	}
	max, afterID := "+inf", ""
	var maxScore int64
	if p.Cursor != "" {
		c, err := project.DecodeCursor(p.Cursor)
		if err != nil {
			return project.Page[Delivery]{}, err
		}
		score, id, ok := strings.Cut(c, ":")
		n, perr := strconv.ParseInt(score, 10, 64)
		if !ok || perr != nil {
			return project.Page[Delivery]{}, apperr.Invalidf("cursor is malformed")
		}
		max, afterID, maxScore = score, id, n
	}
	type deadSet struct {
		pt     *part
		key    string
		offset int64
		done   bool
		items  []deadLetter
	}
	var sets []*deadSet
	if webhookID != "" {
		for _, pt := range e.hookParts(webhookID) {
			sets = append(sets, &deadSet{pt: pt, key: pt.dlqHookKey(pid, webhookID)})
		}
	} else {
		for _, pt := range e.parts {
			sets = append(sets, &deadSet{pt: pt, key: pt.dlqKey(pid)})
		}
	}
	// Members outlive their records by at most the DLQ retention: trim.
	cutoff := "(" + strconv.FormatInt(e.o.Now().Add(-e.o.DLQRetention).UnixMilli(), 10)
	_, _ = e.rdb.Pipelined(ctx, func(pp redis.Pipeliner) error {
		for _, s := range sets {
			pp.ZRemRangeByScore(ctx, s.key, "-inf", cutoff)
		}
		return nil
	})
	for {
		var reading []*deadSet
		for _, s := range sets {
			if !s.done && len(s.items) <= p.Limit {
				reading = append(reading, s)
			}
		}
		if len(reading) == 0 {
			break
		}
		ranges := make([]*redis.ZSliceCmd, len(reading))
		if _, err := e.rdb.Pipelined(ctx, func(pp redis.Pipeliner) error {
			for i, s := range reading {
				ranges[i] = pp.ZRevRangeByScoreWithScores(ctx, s.key, &redis.ZRangeBy{Max: max, Min: "-inf", Offset: s.offset, Count: int64(p.Limit + 1)})
			}
			return nil
		}); err != nil {
			return project.Page[Delivery]{}, fmt.Errorf("list dead letters: %w", err)
		}
		zss := make([][]redis.Z, len(reading))
		cmds := make([][]*redis.SliceCmd, len(reading))
		if _, err := e.rdb.Pipelined(ctx, func(pp redis.Pipeliner) error {
			for i, s := range reading {
				zss[i] = ranges[i].Val()
				if len(zss[i]) == 0 {
					s.done = true
					continue
				}
				s.offset += int64(len(zss[i]))
				for _, z := range zss[i] {
					cmds[i] = append(cmds[i], pp.HMGet(ctx, s.pt.dKey(z.Member.(string)), deliveryFields...))
				}
			}
			return nil
		}); err != nil {
			return project.Page[Delivery]{}, fmt.Errorf("list dead letters: %w", err)
		}
		var gone []*deadSet
		var goneIDs []string
		for i, s := range reading {
			for j, z := range zss[i] {
				id := z.Member.(string)
				score := int64(z.Score)
				// Equal scores come in reverse id order: skip what the
				// previous page showed.
				if afterID != "" && score == maxScore && id >= afterID {
					continue
				}
				d, ok := decodeDelivery(id, pid, cmds[i][j].Val())
				if !ok || d.Status != "dead" {
					gone, goneIDs = append(gone, s), append(goneIDs, id) // expired or replayed meanwhile
					continue
				}
				if len(s.items) <= p.Limit {
					d.part = s.pt.k
					s.items = append(s.items, deadLetter{score: score, d: d})
				}
			}
		}
		if len(gone) > 0 {
			_, _ = e.rdb.Pipelined(ctx, func(pp redis.Pipeliner) error {
				for i, s := range gone {
					pp.ZRem(ctx, s.key, goneIDs[i])
				}
				return nil
			})
		}
	}
	var all []deadLetter
	for _, s := range sets {
		all = append(all, s.items...)
	}
	slices.SortFunc(all, func(a, b deadLetter) int {
		if c := cmp.Compare(b.score, a.score); c != 0 {
			return c
		}
		return strings.Compare(b.d.ID, a.d.ID)
	})
	page := project.Page[Delivery]{Items: []Delivery{}}
	for i, dl := range all {
		if i == p.Limit {
			c := project.EncodeCursor(strconv.FormatInt(all[i-1].score, 10) + ":" + all[i-1].d.ID)
			page.NextCursor = &c
			break
		}
		page.Items = append(page.Items, dl.d)
	}
	return page, nil
}

// deadLetter is a dead delivery and its dead time (unix ms), its score in
// the dead-letter sets.
type deadLetter struct {
	score int64
	d     Delivery
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
	touched := make(partSet, len(e.parts))
	err := e.pipelined(ctx, func(p redis.Pipeliner) {
		for i, d := range ds {
			pt := e.parts[d.part]
			cmds[i] = replayScript.Eval(ctx, p, []string{pt.dKey(d.ID), pt.attKey(d.ID), pt.dueOf(pid),
				pt.dlqKey(pid), pt.dlqHookKey(pid, d.WebhookID), pt.projectsKey}, d.ID, now.UnixMilli(), pid)
			touched.add(pt.k)
		}
		if len(ds) > 0 {
			e.nudge(ctx, p, now, now, touched)
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
		e.poke(now, touched)
	}
	return n, err
}

// Discard deletes a dead delivery.
func (e *Engine) Discard(ctx context.Context, pid, id string) error {
	d, err := e.Get(ctx, pid, id)
	if err != nil {
		return err
	}
	pt := e.parts[d.part]
	done, err := decodeDone(discardScript.Run(ctx, e.rdb, []string{pt.dKey(id), pt.attKey(id), pt.dlqKey(pid), pt.dlqHookKey(pid, d.WebhookID)}, id))
	if err != nil {
		return fmt.Errorf("discard: %w", err)
	}
	if !done {
		return apperr.New(apperr.Conflict, "not_dead_lettered", "delivery %s is %s, not dead-lettered", id, d.Status)
	}
	return nil
}
