package rdb

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// ClockOptions configures a Clock. Zero values take the defaults noted.
type ClockOptions struct {
	Local    func() time.Time // the node's own clock; default time.Now
	Interval time.Duration    // between measurements; default 10s
	// WarnOffset is the offset from Redis beyond which the node's clock is
	// reported as wrong (a warning when it goes beyond, an info line when
	// it comes back); default 1s.
	WarnOffset time.Duration
	Log        zerolog.Logger
	Registerer prometheus.Registerer // optional: riverhub_clock_offset_seconds
}

// Clock is the deployment's time: the node's own clock corrected by its
// offset from Redis TIME. Leases, due times and deadlines written by one
// node are compared by the others, so they must all be read off one clock,
// and Redis is the one every node talks to. Now is lock-free.
//
// The embedded Redis answers TIME from this process's own clock, so the
// offset there is (close to) zero, as it should be: there is one node.
type Clock struct {
	rdb    redis.UniversalClient
	o      ClockOptions
	offset atomic.Int64 // nanoseconds to add to Local
	large  bool         // under the sync goroutine: the last offset was beyond WarnOffset

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// clockSamples is how many TIME round trips one measurement takes; the
// shortest one is used, since its midpoint is the closest to when Redis
// read its clock.
const clockSamples = 5

// NewClock returns a clock whose offset is zero until Start measures it.
func NewClock(c redis.UniversalClient, o ClockOptions) *Clock {
	if o.Local == nil {
		o.Local = time.Now
	}
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	if o.WarnOffset <= 0 {
		o.WarnOffset = time.Second
	}
	k := &Clock{rdb: c, o: o, stop: make(chan struct{}), done: make(chan struct{})}
	if o.Registerer != nil {
		o.Registerer.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "riverhub_clock_offset_seconds",
			Help: "Redis TIME minus this node's clock, as last measured: the correction this node applies to every time it writes."},
			func() float64 { return k.Offset().Seconds() }))
	}
	return k
}

// Now is the local clock plus the last measured offset.
func (k *Clock) Now() time.Time { return k.o.Local().Add(k.Offset()) }

// Offset is Redis TIME minus the local clock, as last measured.
func (k *Clock) Offset() time.Duration { return time.Duration(k.offset.Load()) }

// Start measures the offset once, then again every Interval until Stop.
// It returns the first measurement's error; the clock runs anyway, on the
// local clock until Redis answers. A measurement that fails keeps the
// last offset.
func (k *Clock) Start(ctx context.Context) error {
	err := k.sync(ctx)
	go func() {
		defer close(k.done)
		t := time.NewTicker(k.o.Interval)
		defer t.Stop()
		for {
			select {
			case <-k.stop:
				return
			case <-t.C:
			}
			if err := k.sync(context.Background()); err != nil {
				k.o.Log.Debug().Err(err).Msg("clock: keeping the last offset")
			}
		}
	}()
	return err
}

// Stop ends the measurements; call it after Start. Safe twice.
func (k *Clock) Stop() {
	k.stopOnce.Do(func() { close(k.stop) })
	<-k.done
}

// sync measures the offset: of several TIME round trips, the shortest,
// taking Redis's reading as made at its midpoint (wrong by at most half
// that round trip).
func (k *Clock) sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	best := time.Duration(-1)
	var offset time.Duration
	var err error
	for range clockSamples {
		t0 := k.o.Local()
		var at time.Time
		at, err = k.rdb.Time(ctx).Result()
		rtt := k.o.Local().Sub(t0)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if best < 0 || rtt < best {
			best, offset = rtt, at.Sub(t0.Add(rtt/2))
		}
	}
	if best < 0 {
		return fmt.Errorf("read the redis clock: %w", err)
	}
	k.offset.Store(int64(offset))
	if large := offset.Abs() > k.o.WarnOffset; large != k.large {
		k.large = large
		if large {
			k.o.Log.Warn().Stringer("offset", offset).Msg("this node's clock differs from Redis TIME by more than " +
				k.o.WarnOffset.String() + ": the node corrects for it, but check its time sync (NTP)")
		} else {
			k.o.Log.Info().Stringer("offset", offset).Msg("this node's clock agrees with Redis TIME again")
		}
	}
	return nil
}
