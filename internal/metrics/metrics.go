// Package metrics defines idemsink's Prometheus metrics. They are
// registered on the Registerer passed in, never on the global default.
package metrics

import "github.com/prometheus/client_golang/prometheus"

// Metrics holds every collector the daemon updates.
type Metrics struct {
	// Records counts records by pipeline and result: inserted, updated,
	// repaired, unchanged, stale, superseded, skipped, dead_lettered.
	Records *prometheus.CounterVec
	// DeadLetters counts committed dead letters by pipeline and class:
	// the class their reason starts with (record.Classes), or "other".
	DeadLetters *prometheus.CounterVec
	// Batches counts batch attempts by pipeline and outcome: applied,
	// verify_failed, fenced, error.
	Batches *prometheus.CounterVec
	// BatchSeconds is the time to apply a batch, by pipeline and phase
	// (stage, upsert, verify, total).
	BatchSeconds *prometheus.HistogramVec
	// VerifyFailures counts batches rolled back by verification.
	VerifyFailures *prometheus.CounterVec
	// DBRetries counts retried database failures (outages, timeouts).
	DBRetries prometheus.Counter
	// RegistryRetries counts records held back because the Schema
	// Registry could not be reached; they are decoded again later.
	RegistryRetries prometheus.Counter
	// Fences counts partitions dropped back to the ledger's offset
	// because a newer generation owns them (a fenced batch).
	Fences prometheus.Counter
	// KafkaCommitErrors counts offset commits Kafka refused; the ledger
	// still holds the applied position, so nothing is lost.
	KafkaCommitErrors prometheus.Counter
	// Ready is 1 when the consumer is in its group and the database answers.
	Ready prometheus.Gauge
	// Buffered is the number of records held in open batches.
	Buffered prometheus.Gauge
	// AppliedOffset is the ledger's applied offset by topic and partition.
	AppliedOffset *prometheus.GaugeVec
	// Lag is, by topic and partition, the log end (the high watermark the
	// fetch responses carry) minus the ledger's applied offset: records
	// not yet applied. No admin call is made for it.
	Lag *prometheus.GaugeVec
	// PendingBatchAge is the age in seconds of the oldest batch that was
	// flushed but is not yet applied, by pipeline (0 when none). A batch
	// retried on errors that are not outages shows here as stuck.
	PendingBatchAge *prometheus.GaugeVec
	// TransactionRecords and TransactionDates are, per applied
	// transaction, the records it took from Kafka and the target dates
	// they fell on: one transaction carries the batches of many dates.
	TransactionRecords *prometheus.HistogramVec
	TransactionDates   *prometheus.HistogramVec
}

// New creates the collectors and registers them on reg; reg may be nil.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idemsink_records_total", Help: "Records by pipeline and result.",
		}, []string{"pipeline", "result"}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idemsink_dead_letters_total", Help: "Dead letters committed for the first time (not again after an offset reset), by pipeline and class of reason.",
		}, []string{"pipeline", "class"}),
		Batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idemsink_batches_total", Help: "Batch attempts by pipeline and outcome.",
		}, []string{"pipeline", "outcome"}),
		BatchSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "idemsink_batch_seconds", Help: "Time to apply a batch, by phase.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"pipeline", "phase"}),
		VerifyFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idemsink_verify_failures_total", Help: "Batches rolled back because verification failed.",
		}, []string{"pipeline"}),
		DBRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "idemsink_db_retries_total", Help: "Database operations retried after an outage or timeout.",
		}),
		RegistryRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "idemsink_schema_registry_retries_total", Help: "Partitions rewound because the Schema Registry was unavailable.",
		}),
		Fences: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "idemsink_partition_fences_total", Help: "Partitions read again from the ledger after a fenced batch.",
		}),
		KafkaCommitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "idemsink_kafka_commit_errors_total", Help: "Kafka offset commits that failed after the database commit.",
		}),
		Ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "idemsink_ready", Help: "1 when consuming and the database answers.",
		}),
		Buffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "idemsink_buffered_records", Help: "Records held in open batches.",
		}),
		AppliedOffset: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "idemsink_applied_offset", Help: "End of the contiguous applied prefix, by topic and partition.",
		}, []string{"topic", "partition"}),
		Lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "idemsink_consumer_lag_records", Help: "Log end minus the ledger's applied offset, by topic and partition.",
		}, []string{"topic", "partition"}),
		PendingBatchAge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "idemsink_pending_batch_age_seconds", Help: "Age of the oldest flushed batch not yet applied, by pipeline.",
		}, []string{"pipeline"}),
		TransactionRecords: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "idemsink_transaction_records", Help: "Records taken from Kafka per applied transaction, by pipeline.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10),
		}, []string{"pipeline"}),
		TransactionDates: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "idemsink_transaction_dates", Help: "Target dates per applied transaction, by pipeline.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 7),
		}, []string{"pipeline"}),
	}
	if reg != nil {
		reg.MustRegister(m.Records, m.DeadLetters, m.Batches, m.BatchSeconds, m.VerifyFailures, m.DBRetries, m.RegistryRetries,
			m.Fences, m.KafkaCommitErrors, m.Ready, m.Buffered, m.AppliedOffset, m.Lag, m.PendingBatchAge,
			m.TransactionRecords, m.TransactionDates)
	}
	return m
}
