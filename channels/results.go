package channels

import (
	"fmt"
	"strconv"
)

// The replies of the scripts that answer with several fields, decoded here
// and only here: each reply's shape is written once, so a change to a
// script's return changes one decoder. Scripts that answer one number
// (limit, idemtake, reclaim, release) or a list of ids (claim, claimdue)
// are read where they run.

// storedOutcome is a channel's outcome as complete.lua and start.lua
// return it, in this order after their own leading fields.
type storedOutcome struct {
	status   string
	msg      string // the room's message
	hook     string // the task.ai_generated body (event-driven), or ""
	deadline string // the callback deadline, unix ms (event-driven), or ""
	sim      string // playground: the "simulating backend callback" message, or ""
	beyond   string // non-empty: a callback or the deadline settled the channel since
}

// field is reply field i, "" past the reply's end (scripts leave trailing
// empty fields out in some branches).
func field(out []string, i int) string {
	if i < len(out) {
		return out[i]
	}
	return ""
}

func decodeOutcome(v []string) storedOutcome {
	return storedOutcome{status: field(v, 0), msg: field(v, 1), hook: field(v, 2), deadline: field(v, 3),
		sim: field(v, 4), beyond: field(v, 5)}
}

// startReply is start.lua's reply:
//
//	{"gone"}                                    the channel no longer exists
//	{"run", task, project_id, runs}             run it (runs: this start included)
//	{"done", task, project_id, <storedOutcome>} already completed: do its side effects
type startReply struct {
	verdict string // gone, run, done
	task    string // the stored task, JSON
	project string
	runs    int
	outcome storedOutcome // done
}

// reply decodes a claimed task's start.
func (st started) reply() (startReply, error) {
	if st.err != nil {
		return startReply{}, st.err
	}
	return decodeStart(st.out)
}

// decodeClaimStart reads claimstart.lua's reply: {members, start replies}.
func decodeClaimStart(out []any) ([]string, []started, error) {
	if len(out) != 2 {
		return nil, nil, fmt.Errorf("claimstart.lua: reply of %d fields", len(out))
	}
	members, _ := out[0].([]any)
	replies, _ := out[1].([]any)
	if len(members) != len(replies) {
		return nil, nil, fmt.Errorf("claimstart.lua: %d members, %d starts", len(members), len(replies))
	}
	ids := make([]string, len(members))
	starts := make([]started, len(members))
	for i, m := range members {
		ids[i], _ = m.(string)
		r, _ := replies[i].([]any)
		starts[i].out = make([]string, len(r))
		for j, f := range r {
			starts[i].out[j], _ = f.(string)
		}
	}
	return ids, starts, nil
}

func decodeStart(out []string) (startReply, error) {
	if len(out) == 0 {
		return startReply{}, fmt.Errorf("start.lua: empty reply")
	}
	r := startReply{verdict: out[0]}
	switch r.verdict {
	case "gone":
		return r, nil
	case "run", "done":
		if len(out) < 4 {
			return r, fmt.Errorf("start.lua: %s reply of %d fields", r.verdict, len(out))
		}
	default:
		return r, fmt.Errorf("start.lua: unknown verdict %q", r.verdict)
	}
	r.task, r.project = out[1], out[2]
	if r.verdict == "run" {
		r.runs, _ = strconv.Atoi(out[3])
	} else {
		r.outcome = decodeOutcome(out[3:])
	}
	return r, nil
}

// completeReply is complete.lua's reply:
//
//	{-1}                        the channel expired
//	{won, <storedOutcome>}      won: 1 if this completion was recorded, 0 if
//	                            another was first (its outcome is returned)
type completeReply struct {
	expired bool
	won     bool
	outcome storedOutcome
}

func decodeComplete(out []any) completeReply {
	n, _ := out[0].(int64)
	if n < 0 {
		return completeReply{expired: true}
	}
	v := make([]string, 0, len(out)-1)
	for _, x := range out[1:] {
		s, _ := x.(string)
		v = append(v, s)
	}
	return completeReply{won: n == 1, outcome: decodeOutcome(v)}
}

// callbackReply is callback.lua's reply:
//
//	{"gone"}                                        no such channel
//	{"foreign"}                                     another project's channel
//
// and otherwise the verdict, the channel's workflow and event name, then:
//
//	{"ok", .., message, generated, sim, logged, published}
//	                                                this callback settled it (published "1": and published its message)
//	{"repeat", .., message, status, compacted}      the same callback again (compacted "1": settled and compacted)
//	{"late", .., outcome, message, status, generated, sim, logged}
//	                                                settled by the deadline (outcome) first
//	{"read", .., task, result}                      no message parts stored: build them, call again with them
//	{"conflict", .., status}                        another callback settled it
//	{"timeout", ..}                                 its deadline passed
//	{"not_awaiting", .., status}                    not an event-driven wait
type callbackReply struct {
	verdict   string
	workflow  string // all but gone and foreign
	event     string // all but gone and foreign
	outcome   string // late: what settled it (timeout, simulated)
	msg       string // ok, repeat, late: the room's final message
	status    string // repeat, late, conflict, not_awaiting
	generated string // ok, late: the ai_generated message published before, if not yet
	sim       string // ok, late: the playground's simulating message, if not yet
	compacted bool   // repeat: the channel's record was compacted (settled long since)
	task      string // read: the stored task
	result    string // read: the stored generation
	logged    bool   // ok, late: the final message's broadcast entry was written with the outcome
	published bool   // ok: the final message was published with the outcome (ScriptPublisher)
}

func decodeCallback(out []string) (callbackReply, error) {
	if len(out) == 0 {
		return callbackReply{}, fmt.Errorf("callback.lua: empty reply")
	}
	r := callbackReply{verdict: out[0]}
	if r.verdict == "gone" || r.verdict == "foreign" {
		return r, nil
	}
	r.workflow, r.event = field(out, 1), field(out, 2)
	switch rest := out[min(len(out), 3):]; r.verdict { // rest: what follows the event name
	case "timeout":
	case "read":
		r.task, r.result = field(rest, 0), field(rest, 1)
	case "ok":
		r.msg, r.generated, r.sim, r.logged = field(rest, 0), field(rest, 1), field(rest, 2), field(rest, 3) == "1"
		r.published = field(rest, 4) == "1"
	case "repeat":
		r.msg, r.status, r.compacted = field(rest, 0), field(rest, 1), field(rest, 2) == "1"
	case "late":
		r.outcome, r.msg, r.status, r.generated, r.sim = field(rest, 0), field(rest, 1), field(rest, 2), field(rest, 3), field(rest, 4)
		r.logged = field(rest, 5) == "1"
	case "conflict", "not_awaiting":
		r.status = field(rest, 0)
	default:
		return r, fmt.Errorf("callback.lua: unknown verdict %q", r.verdict)
	}
	return r, nil
}

// fireReply is fire.lua's reply for one channel whose deadline came:
//
//	{"gone"}                                        no such channel
//	{"wait", deadline_ms}                           not due yet (moved)
//	{"done", message, project_id, outcome, status, workflow, event}
//	                                                settled before: finish the settling
//	{"fired", message, project_id, outcome, status, workflow, event, generated, sim, logged}
//	                                                this deadline settled it
type fireReply struct {
	verdict   string
	deadline  int64 // wait: unix ms
	msg       string
	project   string
	outcome   string // timeout, simulated (fired), or what settled it (done)
	status    string
	workflow  string
	event     string
	generated string // fired
	sim       string // fired
	logged    bool   // fired: the final message's broadcast entry was written with the outcome
}

func decodeFire(out []string) (fireReply, error) {
	if len(out) == 0 {
		return fireReply{}, fmt.Errorf("fire.lua: empty reply")
	}
	r := fireReply{verdict: out[0]}
	switch r.verdict {
	case "gone":
	case "wait":
		r.deadline, _ = strconv.ParseInt(field(out, 1), 10, 64)
	case "done", "fired":
		r.msg, r.project, r.outcome, r.status, r.workflow, r.event = field(out, 1), field(out, 2), field(out, 3), field(out, 4), field(out, 5), field(out, 6)
		r.generated, r.sim, r.logged = field(out, 7), field(out, 8), field(out, 9) == "1"
	default:
		return r, fmt.Errorf("fire.lua: unknown verdict %q", r.verdict)
	}
	return r, nil
}

// Codes of enqueue.lua's refusals: its reply's first field, negative where
// a queued task's is the depth of its project's queue.
const (
	enqueueQueueFull   int64 = -1 // the deployment's queue is full
	enqueueProjectFull int64 = -2 // the project's queue is full
	enqueueRateLimited int64 = -3 // the project is over its rate
)

// enqueueReply is enqueue.lua's reply:
//
//	{depth}          queued; depth: its project's queue's length, it included
//	{-1}             refused: the deployment's queue is full
//	{-2}             refused: the project's queue is full
//	{-3, wait_ms}    refused: the project is over its rate for wait_ms
type enqueueReply struct {
	refused int64 // 0 (queued) or one of the enqueue codes
	depth   int64 // queued
	taken   int64 // queued: tasks of the project's rate taken (0: not checked)
	waitMS  int64 // enqueueRateLimited
}

// decodeSubmit reads enqueue.lua's reply, or submit.lua's: enqueue.lua's
// with, when the task was taken (submit.lua), start.lua's reply as a third
// field.
func decodeSubmit(out []any) (enqueueReply, *started, error) {
	n := min(len(out), 2)
	ints := make([]int64, n)
	for i := range n {
		v, ok := out[i].(int64)
		if !ok {
			return enqueueReply{}, nil, fmt.Errorf("enqueue.lua: unknown reply %v", out)
		}
		ints[i] = v
	}
	r, err := decodeEnqueue(ints)
	if err != nil || len(out) < 3 || r.refused != 0 {
		return r, nil, err
	}
	f, _ := out[2].([]any)
	st := &started{out: make([]string, len(f))}
	for j, v := range f {
		st.out[j], _ = v.(string)
	}
	return r, st, nil
}

func decodeEnqueue(out []int64) (enqueueReply, error) {
	if len(out) == 0 {
		return enqueueReply{}, fmt.Errorf("enqueue.lua: empty reply")
	}
	switch n := out[0]; {
	case n >= 0:
		r := enqueueReply{depth: n}
		if len(out) > 1 {
			r.taken = out[1]
		}
		return r, nil
	case n == enqueueQueueFull, n == enqueueProjectFull:
		return enqueueReply{refused: n}, nil
	case n == enqueueRateLimited && len(out) == 2:
		return enqueueReply{refused: n, waitMS: out[1]}, nil
	}
	return enqueueReply{}, fmt.Errorf("enqueue.lua: unknown reply %v", out)
}

// Codes of idemclaim.lua's reply: its first field.
const (
	idemHeld     int64 = 0 // the key's request was accepted, or is being accepted (its lease holds)
	idemReserved int64 = 1 // reserved for this request
	idemStale    int64 = 2 // its request's acceptance never finished: its lease ran out
	idemGone     int64 = 3 // the record went meanwhile: ask again
)

// idemClaimReply is idemclaim.lua's reply:
//
//	{1}            reserved
//	{0, record}    held by the request of record
//	{2, record}    stale: record's request never confirmed nor released the key
//	{3}            gone meanwhile
type idemClaimReply struct {
	code   int64  // one of the idem codes
	record string // idemHeld, idemStale: the stored Idempotent, JSON
}

func decodeIdemClaim(out []any) (idemClaimReply, error) {
	if len(out) == 0 {
		return idemClaimReply{}, fmt.Errorf("idemclaim.lua: empty reply")
	}
	code, ok := out[0].(int64)
	if !ok {
		return idemClaimReply{}, fmt.Errorf("idemclaim.lua: code %v", out[0])
	}
	r := idemClaimReply{code: code}
	switch code {
	case idemReserved, idemGone:
	case idemHeld, idemStale:
		if len(out) < 2 {
			return r, fmt.Errorf("idemclaim.lua: %d reply without its record", code)
		}
		r.record, _ = out[1].(string)
	default:
		return r, fmt.Errorf("idemclaim.lua: unknown code %d", code)
	}
	return r, nil
}
