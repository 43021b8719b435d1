import CoreMetrics
import Foundation

/// The worker's own metrics (the process metrics come from the Processes module).
///
/// Names: `fleet_messages_consumed_total`, `fleet_messages_redelivered_total` (deliveries the broker marked
/// redelivered: a worker died, was cut off or gave the message back before acknowledging it),
/// `fleet_duplicates_absorbed_total` (messages handled before, whose effect the store's idempotency key kept
/// from happening twice), `fleet_messages_acked_total`, `fleet_messages_dead_lettered_total`
/// (dimension `reason`), `fleet_messages_retried_total`, `fleet_messages_redelayed_total`,
/// `fleet_handler_duration_seconds`, `fleet_conflicts_retried_total`, `fleet_publications_total`,
/// `fleet_in_flight_messages`, `fleet_outbox_lag_seconds` (from a commit to the confirm of its last
/// publication), `fleet_timeouts_scheduled_total` and `fleet_timeouts_arrived_total` (their difference is the
/// number of timeouts pending on the broker), `fleet_timeout_lateness_seconds` (from a timeout's due time to
/// its handling), `fleet_messages_held` (messages held until their due time), `fleet_delay_hop_seconds` (what a hop through
/// the delay levels costs lately, as this worker learnt it); with the dimension `queue` where
/// a queue applies.
public struct WorkerMetrics: Sendable {
    let factory: any MetricsFactory

    /// Metrics made by `factory` (for example a Prometheus registry's factory).
    public init(factory: any MetricsFactory) {
        self.factory = factory
    }

    func consumed(queue: String) {
        Counter(label: "fleet_messages_consumed_total", dimensions: [("queue", queue)], factory: factory).increment()
    }

    func redelivered(queue: String) {
        Counter(label: "fleet_messages_redelivered_total", dimensions: [("queue", queue)], factory: factory).increment()
    }

    func duplicateAbsorbed(queue: String) {
        Counter(label: "fleet_duplicates_absorbed_total", dimensions: [("queue", queue)], factory: factory).increment()
    }

    func acked(queue: String) {
        Counter(label: "fleet_messages_acked_total", dimensions: [("queue", queue)], factory: factory).increment()
    }

    func deadLettered(queue: String, reason: String) {
        Counter(label: "fleet_messages_dead_lettered_total", dimensions: [("queue", queue), ("reason", reason)], factory: factory).increment()
    }

    func retried(queue: String) {
        Counter(label: "fleet_messages_retried_total", dimensions: [("queue", queue)], factory: factory).increment()
    }

    func idleRelease() {
        Counter(label: "fleet_idle_releases_total", factory: factory).increment()
    }

    func obsolete(queue: String) {
        Counter(label: "fleet_messages_obsolete_total", dimensions: [("queue", queue)], factory: factory).increment()
    }

    func redelayed(queue: String) {
        Counter(label: "fleet_messages_redelayed_total", dimensions: [("queue", queue)], factory: factory).increment()
    }

    func handled(queue: String, seconds: Double) {
        Timer(label: "fleet_handler_duration_seconds", dimensions: [("queue", queue)], factory: factory)
            .recordNanoseconds(Int64(seconds * 1e9))
    }

    func conflictsRetried(_ count: Int) {
        guard count > 0 else { return }
        Counter(label: "fleet_conflicts_retried_total", factory: factory).increment(by: count)
    }

    func published(_ count: Int) {
        guard count > 0 else { return }
        Counter(label: "fleet_publications_total", factory: factory).increment(by: count)
    }

    func outboxLag(seconds: Double) {
        Timer(label: "fleet_outbox_lag_seconds", factory: factory).recordNanoseconds(Int64(max(0, seconds) * 1e9))
    }

    func timeoutsScheduled(_ count: Int) {
        guard count > 0 else { return }
        Counter(label: "fleet_timeouts_scheduled_total", factory: factory).increment(by: count)
    }

    func timeoutArrived(lateness: Double?) {
        Counter(label: "fleet_timeouts_arrived_total", factory: factory).increment()
        if let lateness {
            Timer(label: "fleet_timeout_lateness_seconds", factory: factory).recordNanoseconds(Int64(max(0, lateness) * 1e9))
        }
    }

    func hopCost(seconds: Double) {
        Gauge(label: "fleet_delay_hop_seconds", factory: factory).record(seconds)
    }

    func held(_ value: Int, queue: String) {
        Gauge(label: "fleet_messages_held", dimensions: [("queue", queue)], factory: factory).record(value)
    }

    func inFlight(_ value: Int) {
        Gauge(label: "fleet_in_flight_messages", factory: factory).record(value)
    }
}
