package rdb

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// A node whose clock runs 20 s ahead reads Redis time off its Clock, says
// that its clock is wrong, and keeps the correction while Redis is away.
func TestClockCorrectsShiftedNode(t *testing.T) {
	t.Parallel()
	c, _ := rdbtest.New(t)
	ctx := context.Background()
	var logs bytes.Buffer
	k := NewClock(c, ClockOptions{Local: func() time.Time { return time.Now().Add(20 * time.Second) }, Log: zerolog.New(&logs)})
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer k.Stop()

	const tolerance = 100 * time.Millisecond
	before := k.Now()
	redisNow, err := c.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	after := k.Now()
	if redisNow.Before(before.Add(-tolerance)) || redisNow.After(after.Add(tolerance)) {
		t.Errorf("Redis TIME %v is not between the clock's readings %v and %v", redisNow, before, after)
	}
	if !strings.Contains(logs.String(), `"level":"warn"`) || !strings.Contains(logs.String(), "differs from Redis TIME") {
		t.Errorf("no warning about the node's clock: %s", logs.String())
	}

	offset := k.Offset()
	_ = c.Close()
	if err := k.sync(ctx); err == nil {
		t.Fatal("a measurement against a closed client succeeded")
	}
	if k.Offset() != offset {
		t.Errorf("offset after a failed measurement = %v, want the last one, %v", k.Offset(), offset)
	}
}
