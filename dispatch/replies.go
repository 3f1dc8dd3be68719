package dispatch

import (
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// The words the engine and its scripts exchange, and the scripts' replies,
// decoded here and only here: each reply's shape is written once, so a
// change to a script's return changes one function.

// verdict is what follows an attempt, or what a result stands for when
// there was none. ok, retry and dead are also record.lua's outcomes, the
// attempts metric's labels and the statistics' fields.
type verdict string

const (
	verdictOK        verdict = "ok"        // delivered
	verdictRetry     verdict = "retry"     // failed; a retry is scheduled
	verdictDead      verdict = "dead"      // failed the last time: dead-lettered
	verdictCancelled verdict = "cancelled" // failed, and its retries had been cancelled (record.lua)
	verdictDefer     verdict = "defer"     // back to the schedule without an attempt (defer.lua)
	verdictNote      verdict = "note"      // no change to the delivery: log entries only
)

// healthChange is what an attempt changed of its endpoint's circuit
// (record.lua).
type healthChange string

const (
	changeNone     healthChange = ""
	changeOpened   healthChange = "opened"   // it opened: deliveries wait for a probe
	changeReopened healthChange = "reopened" // a probe failed, or Retry-After extended it
	changeClosed   healthChange = "closed"   // it answered: waiting deliveries go
	changeDisable  healthChange = "disable"  // failing for DisableAfter: disable it
)

// recorded is what record.lua did with an attempt's outcome.
type recorded int

const (
	recordStale     recorded = 0 // the claim was stale: the newer claim records the delivery's outcome
	recordApplied   recorded = 1 // recorded as asked
	recordCancelled recorded = 2 // ended as cancelled instead: its retries were cancelled meanwhile
)

// recordReply is record.lua's reply, {recorded, change}.
type recordReply struct {
	recorded recorded
	change   healthChange
}

// decodeRecord reads record.lua's reply; an error or a short reply is a
// stale record with no change.
func decodeRecord(c *redis.Cmd) recordReply {
	v, err := c.Slice()
	if err != nil || len(v) < 2 {
		return recordReply{}
	}
	n, _ := v[0].(int64)
	change, _ := v[1].(string)
	return recordReply{recorded: recorded(n), change: healthChange(change)}
}

// cancelled is cancel.lua's reply.
type cancelled int

const (
	cancelNothing cancelled = 0 // nothing to cancel: done, dead, cancelled, or unknown
	cancelStopped cancelled = 1 // it was waiting: stopped at once
	cancelMarked  cancelled = 2 // an attempt is under way: its record ends it
)

func decodeCancel(c *redis.Cmd) cancelled {
	n, _ := c.Int()
	return cancelled(n)
}

// decodeDone reads the reply of the scripts that answer 1 when they did
// what was asked, 0 when the delivery was not in the state for it
// (replay.lua, discard.lua).
func decodeDone(c *redis.Cmd) (bool, error) {
	n, err := c.Int()
	return n == 1, err
}

// claimReply is claim.lua's reply:
//
//	{deliveries, earliest due or "", paused, projects with something due, put off,
//	 those projects}
//
// each delivery {id, project_id, webhook_id, channel_id, event, body,
// attempts, tries, resumed}; each paused one {id, channel_id, webhook_id,
// event, until (unix ms), reason}; each put off {id, webhook_id,
// project_id, due (unix ms)}.
type claimReply struct {
	deliveries []claimed // without the claim's token and time
	next       time.Time // the earliest due time of the rest; zero: none
	paused     []pausedDelivery
	duePids    []string  // the projects with something due (up to 100 and those skipped)
	hasDue     bool      // duePids was answered
	putOff     []claimed // id, webhookID, projectID, and at: the time it is due
}

// pausedDelivery is a delivery the claim found waiting for its endpoint's
// circuit.
type pausedDelivery struct {
	id, channelID, webhookID, event string
	until                           string // unix ms, or as the script gave it
	reason                          string
}

func decodeClaim(res []any) (claimReply, error) {
	if len(res) < 5 {
		return claimReply{}, fmt.Errorf("claim.lua: reply of %d fields", len(res))
	}
	var r claimReply
	rows, _ := res[0].([]any)
	r.deliveries = make([]claimed, 0, len(rows))
	for _, row := range rows {
		f, _ := row.([]any)
		if len(f) < 9 {
			continue
		}
		s := func(i int) string { v, _ := f[i].(string); return v }
		d := claimed{id: s(0), projectID: s(1), webhookID: s(2), channelID: s(3), event: s(4), body: []byte(s(5)), resumed: s(8)}
		d.attempts, _ = parseInt(s(6))
		d.tries, _ = parseInt(s(7))
		r.deliveries = append(r.deliveries, d)
	}
	if sc, _ := res[1].(string); sc != "" {
		if ms, err := parseInt(sc); err == nil {
			r.next = time.UnixMilli(ms)
		}
	}
	paused, _ := res[2].([]any)
	for _, row := range paused {
		f, _ := row.([]any)
		if len(f) < 6 {
			continue
		}
		s := func(i int) string { v, _ := f[i].(string); return v }
		r.paused = append(r.paused, pausedDelivery{id: s(0), channelID: s(1), webhookID: s(2), event: s(3), until: s(4), reason: s(5)})
	}
	if _, ok := res[3].(int64); ok && len(res) > 5 {
		pids, _ := res[5].([]any)
		r.duePids, r.hasDue = make([]string, 0, len(pids)), true
		for _, p := range pids {
			if s, ok := p.(string); ok {
				r.duePids = append(r.duePids, s)
			}
		}
	}
	held, _ := res[4].([]any)
	for _, row := range held {
		f, _ := row.([]any)
		if len(f) < 4 {
			continue
		}
		id, _ := f[0].(string)
		whid, _ := f[1].(string)
		pid, _ := f[2].(string)
		due, _ := f[3].(int64)
		r.putOff = append(r.putOff, claimed{id: id, webhookID: whid, projectID: pid, at: time.UnixMilli(due)})
	}
	return r, nil
}
