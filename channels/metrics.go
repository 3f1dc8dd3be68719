package channels

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/riverhub/riverhub/ai"
)

type metrics struct {
	submitted prometheus.Counter
	rejected  prometheus.Counter
	limited   prometheus.Counter
	reclaimed prometheus.Counter
	completed *prometheus.CounterVec
	attempts  *prometheus.CounterVec
	busy      prometheus.Gauge
	timeouts  *prometheus.CounterVec
	// writeRetries counts writes after a provider call retried for a
	// Redis error (see persist).
	writeRetries prometheus.Counter
	// waits counts runs that waited for a provider, by provider and
	// reason (rate_limit, retry); waited observes how long an attempt
	// waited.
	waits  *prometheus.CounterVec
	waited *prometheus.HistogramVec
	// folded counts settled channels folded (fold.go) by this node.
	folded prometheus.Counter
	// archived counts settled channels moved to the archive (archive.go)
	// by this node.
	archived prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, s *Service) metrics {
	m := metrics{
		submitted: prometheus.NewCounter(prometheus.CounterOpts{Name: "riverhub_tasks_submitted_total",
			Help: "Tasks accepted by this node."}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{Name: "riverhub_tasks_rejected_total",
			Help: "Submissions refused because the queue (the deployment's or the project's) was full."}),
		limited: prometheus.NewCounter(prometheus.CounterOpts{Name: "riverhub_tasks_rate_limited_total",
			Help: "Submissions refused because their project submitted over its rate."}),
		reclaimed: prometheus.NewCounter(prometheus.CounterOpts{Name: "riverhub_tasks_reclaimed_total",
			Help: "Tasks requeued by this node after their lease expired."}),
		completed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "riverhub_tasks_completed_total",
			Help: "Tasks completed by this node, by final status."}, []string{"status"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "riverhub_provider_attempts_total",
			Help: "Provider attempts, by provider and outcome (success, failure, skipped: cooling down)."}, []string{"provider", "outcome"}),
		timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "riverhub_callback_deadlines_fired_total",
			Help: "Callback deadlines fired by this node, by outcome (timeout, simulated)."}, []string{"outcome"}),
		writeRetries: prometheus.NewCounter(prometheus.CounterOpts{Name: "riverhub_task_write_retries_total",
			Help: "Writes after a provider call (completion, webhook enqueue, lease release) retried because Redis failed."}),
		waits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "riverhub_provider_waits_total",
			Help: "Tasks that had to wait for a provider, by provider and reason (rate_limit: a permit of its limits; retry: a retry delay)."},
			[]string{"provider", "reason"}),
		waited: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "riverhub_provider_wait_seconds",
			Help:    "Time an attempt waited before it was sent (retry delay and rate-limit permit), attempts that waited only.",
			Buckets: []float64{.01, .05, .1, .5, 1, 2, 5, 10, 30, 60, 120, 300}}, []string{"provider"}),
		folded: prometheus.NewCounter(prometheus.CounterOpts{Name: "riverhub_channels_folded_total",
			Help: "Settled channels folded into their compressed document by this node, once their hot window had passed."}),
		archived: prometheus.NewCounter(prometheus.CounterOpts{Name: "riverhub_channels_archived_total",
			Help: "Settled channels moved to the archive by this node, once their hot window had passed."}),
		busy: prometheus.NewGauge(prometheus.GaugeOpts{Name: "riverhub_workers_busy",
			Help: "Tasks running a provider call on this node."}),
	}
	if reg == nil {
		return m
	}
	depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "riverhub_task_queue_depth",
		Help: "Tasks waiting for a worker (all nodes)."}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		n, err := s.QueueDepth(ctx)
		if err != nil {
			return -1
		}
		return float64(n)
	})
	waiting := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "riverhub_tasks_waiting",
		Help: "Tasks on this node waiting for a provider (a rate-limit permit or a retry delay) without holding a worker."},
		func() float64 { return float64(s.waiting.Load()) })
	workers := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "riverhub_workers",
		Help: "Size of this node's task worker pool."}, func() float64 { return float64(s.o.Workers) })
	reg.MustRegister(m.submitted, m.rejected, m.limited, m.reclaimed, m.completed, m.attempts, m.busy, m.timeouts, m.writeRetries, m.waits, m.waited, m.folded, m.archived, depth, workers, waiting)
	return m
}

func (m metrics) countAttempts(as []ai.Attempt) {
	for _, a := range as {
		outcome := "failure"
		switch {
		case a.Success:
			outcome = "success"
		case a.Skipped:
			outcome = "skipped"
		}
		m.attempts.WithLabelValues(a.Provider, outcome).Inc()
		if a.WaitMS > 0 {
			m.waited.WithLabelValues(a.Provider).Observe(float64(a.WaitMS) / 1000)
		}
	}
}
