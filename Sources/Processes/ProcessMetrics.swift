import CoreMetrics
import Metrics
import EventCore
import Foundation

/// Process metrics under the names EventCore's documentation uses, reported to a factory the caller passes
/// in (never the global one). Each metric carries a `process_type` dimension.
///
/// Metrics are derived from committed lifecycle events, so they need no state of their own: any worker that
/// commits a `ProcessCompleted` knows the duration from the start time the event carries.
public struct ProcessMetrics: Sendable {
    /// The metric names.
    public enum Name {
        /// Counter of processes started.
        public static let started = "eventcore_processes_started_total"
        /// Counter of processes completed.
        public static let completed = "eventcore_processes_completed_total"
        /// Counter of processes failed.
        public static let failed = "eventcore_processes_failed_total"
        /// Timer (a histogram in seconds) of the time from start to completion or failure.
        public static let duration = "eventcore_process_duration_seconds"
        /// Gauge of processes started and not ended.
        public static let active = "eventcore_active_processes"
    }

    /// The dimension naming the kind of process.
    public static let processTypeDimension = "process_type"

    private let factory: any MetricsFactory
    private let dimensions: [(String, String)]

    /// Creates the metrics.
    /// - Parameters:
    ///   - factory: where metrics go, for example a Prometheus factory owned by the application.
    ///   - dimensions: extra dimensions on every metric (for example the worker's name).
    public init(factory: any MetricsFactory, dimensions: [(String, String)] = []) {
        self.factory = factory
        self.dimensions = dimensions
    }

    private func dimensions(_ processType: String) -> [(String, String)] {
        dimensions + [(Self.processTypeDimension, processType)]
    }

    /// Counts the processes that `result` started, completed or failed. Only a committed result counts: a
    /// duplicate was counted when it first committed.
    public func record(_ result: CommandResult) {
        guard result.outcome == .committed else { return }
        let codec = EventCodec()
        for stored in result.events where Self.counted.contains(stored.eventType) {
            guard let event = try? codec.decode(stored, as: ProcessLifecycleEvent.self) else { continue }
            record(event)
        }
    }

    /// The lifecycle events that move a metric; the others are not even decoded.
    private static let counted: Set<String> = [
        ProcessLifecycleEvent.TypeName.started, ProcessLifecycleEvent.TypeName.completed, ProcessLifecycleEvent.TypeName.failed,
    ]

    /// Counts one committed lifecycle event.
    public func record(_ event: ProcessLifecycleEvent) {
        switch event {
        case .started(let started):
            Counter(label: Name.started, dimensions: dimensions(started.processType), factory: factory).increment()
            Meter(label: Name.active, dimensions: dimensions(started.processType), factory: factory).increment()
        case .completed(let completed):
            Counter(label: Name.completed, dimensions: dimensions(completed.processType), factory: factory).increment()
            ended(completed.processType, after: completed.completedAt.timeIntervalSince(completed.startedAt))
        case .failed(let failed):
            Counter(label: Name.failed, dimensions: dimensions(failed.processType), factory: factory).increment()
            ended(failed.processType, after: failed.failedAt.timeIntervalSince(failed.startedAt))
        case .timeoutScheduled, .timeoutCancelled, .retryScheduled:
            break
        }
    }

    private func ended(_ processType: String, after seconds: TimeInterval) {
        Meter(label: Name.active, dimensions: dimensions(processType), factory: factory).decrement()
        CoreMetrics.Timer(label: Name.duration, dimensions: dimensions(processType), factory: factory)
            .recordNanoseconds(Int64((max(0, seconds) * 1e9).rounded()))
    }

    /// Sets the active-process gauge of `processType` to an absolute count, such as one a
    /// ``ProcessCatalog`` computed from the store (the fleet-wide truth, where increments are per worker).
    public func setActiveProcesses(_ count: Int, processType: String) {
        Meter(label: Name.active, dimensions: dimensions(processType), factory: factory).set(count)
    }
}
