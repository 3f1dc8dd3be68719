package dispatch

import (
	"testing"
)

// A claim sent again with its token (its answer was lost when Redis
// stopped) returns the deliveries it took, and takes no others.
func TestClaimSentAgainReturnsWhatItTook(t *testing.T) {
	t.Parallel()
	e, _, _ := relOneEndpoint(t, "http://127.0.0.1:9/hook", Options{})
	relEnqueueN(t, e, "p1", "ch-a", 3)
	token := "lost-answer"
	run := func() []string {
		t.Helper()
		now := e.o.Now()
		pt := e.partOf("wh_1")
		res, err := claimScript.Run(t.Context(), e.rdb, []string{pt.projectsKey, pt.leaseKey, pt.unhealthyKey, pt.wakeKey, pt.claimPrefix + token},
			now.UnixMilli(), 10, now.Add(e.lease()).UnixMilli(), token, pt.dPrefix, 60, pt.epPrefix, pt.duePrefix, 0).Slice()
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range res[0].([]any) {
			ids = append(ids, r.([]any)[0].(string))
		}
		return ids
	}
	first := run()
	if len(first) != 3 {
		t.Fatalf("first claim took %d deliveries, want 3", len(first))
	}
	relEnqueueN(t, e, "p1", "ch-b", 2)
	again := run()
	if len(again) != 3 {
		t.Fatalf("the claim sent again returned %v; want the 3 it took (%v)", again, first)
	}
	for i := range first {
		if again[i] != first[i] {
			t.Fatalf("the claim sent again returned %v; want %v", again, first)
		}
	}
	// The two later deliveries are still due, for another claim.
	token = "next"
	if rest := run(); len(rest) != 2 {
		t.Fatalf("a new claim took %v; want the 2 later deliveries", rest)
	}
}
