package channels

import (
	"fmt"
	"strconv"
)

// The results of the task scripts, decoded here and only here: each
// script's reply shape is written once, next to its reader, so a change to
// a script's return changes one function.

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

func decodeOutcome(v []string) storedOutcome {
	at := func(i int) string {
		if i < len(v) {
			return v[i]
		}
		return ""
	}
	return storedOutcome{status: at(0), msg: at(1), hook: at(2), deadline: at(3), sim: at(4), beyond: at(5)}
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
