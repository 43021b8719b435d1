import EventCore
import Foundation

/// Lists processes by state and shows one process's history, reading the store by event type.
///
/// It reads lifecycle events (and the saga events that mark a saga as needing attention) through
/// ``EventStore/events(matching:)``, page by page, so it works on every store without a projection table.
public struct ProcessCatalog: Sendable {
    /// The store.
    public let store: any EventStore
    /// Events read per page.
    public var pageSize: Int

    /// Creates a catalog.
    public init(store: any EventStore, pageSize: Int = 1000) {
        self.store = store
        self.pageSize = pageSize
    }

    /// Every process, optionally only those with status `filter` and of type `processType`, ordered by start.
    public func processes(status filter: ProcessSummary.StatusFilter? = nil, processType: String? = nil) async throws -> [ProcessSummary] {
        let types = Array(ProcessLifecycleEvent.TypeName.all) + [SagaEvent.TypeName.needsAttention, SagaEvent.TypeName.compensationResumed]
        var summaries: [StreamID: ProcessSummary] = [:]
        var order: [StreamID] = []
        var position = 0
        let codec = EventCodec()
        while true {
            let page = try await store.events(matching: EventQuery(eventTypes: types, afterPosition: position, limit: pageSize))
            for stored in page {
                guard let event = try codec.decode(stored, as: ProcessEvent<SagaEvent>.self) else { continue }
                if case .lifecycle(.started(let started)) = event, summaries[stored.streamID] == nil {
                    order.append(stored.streamID)
                    summaries[stored.streamID] = ProcessSummary(processID: stored.streamID, started: started)
                } else {
                    summaries[stored.streamID]?.apply(event, at: stored.recordedAt)
                }
            }
            guard let last = page.last, page.count == pageSize else { break }
            position = last.globalPosition
        }
        return order.compactMap { summaries[$0] }.filter { summary in
            (filter.map { summary.matches($0) } ?? true) && (processType.map { summary.processType == $0 } ?? true)
        }
    }

    /// The number of running processes (needing attention included), by process type.
    public func activeCounts() async throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for summary in try await processes() where !summary.status.isEnded {
            counts[summary.processType, default: 0] += 1
        }
        return counts
    }

    /// Every event of the process stream, oldest first.
    public func history(of processID: StreamID) async throws -> [ProcessHistoryEntry] {
        try await store.read(stream: processID).events.map(ProcessHistoryEntry.init)
    }
}

/// One process as the catalog sees it.
public struct ProcessSummary: Sendable, Hashable {
    /// Where a process stands, as listed.
    public enum Status: Sendable, Hashable, CustomStringConvertible {
        /// Started and not ended.
        case running
        /// A saga whose compensation cannot succeed: an operator must look.
        case needsAttention(reason: String)
        /// Reached its goal.
        case completed
        /// Ended without reaching its goal.
        case failed(reason: String)

        /// Whether it completed or failed.
        public var isEnded: Bool {
            switch self {
            case .completed, .failed: true
            case .running, .needsAttention: false
            }
        }

        /// `running`, `needs attention: <reason>`, ...
        public var description: String {
            switch self {
            case .running: "running"
            case .needsAttention(let reason): "needs attention: \(reason)"
            case .completed: "completed"
            case .failed(let reason): "failed: \(reason)"
            }
        }
    }

    /// A status to list by.
    public enum StatusFilter: String, Sendable, Hashable, CaseIterable {
        /// Running, needing attention included.
        case running
        /// Needing attention.
        case needsAttention
        /// Completed.
        case completed
        /// Failed.
        case failed
    }

    /// The process stream.
    public var processID: StreamID
    /// The kind of process.
    public var processType: String
    /// The business id.
    public var businessID: String
    /// When it started.
    public var startedAt: Date
    /// Where it stands.
    public var status: Status
    /// When it ended, if it did.
    public var endedAt: Date?
    /// The timeout still to fire, if any.
    public var pendingTimeout: TimeoutScheduled?
    /// Retries over the process's life.
    public var retries: Int

    init(processID: StreamID, started: ProcessStarted) {
        self.processID = processID
        processType = started.processType
        businessID = started.businessID
        startedAt = started.startedAt
        status = .running
        retries = 0
    }

    mutating func apply(_ event: ProcessEvent<SagaEvent>, at recordedAt: Date) {
        switch event {
        case .lifecycle(.completed(let completed)):
            status = .completed
            endedAt = completed.completedAt
            pendingTimeout = nil
        case .lifecycle(.failed(let failed)):
            status = .failed(reason: failed.reason)
            endedAt = failed.failedAt
            pendingTimeout = nil
        case .lifecycle(.timeoutScheduled(let timeout)):
            pendingTimeout = timeout
        case .lifecycle(.timeoutCancelled(let cancelled)):
            if pendingTimeout?.timeoutID == cancelled.timeoutID { pendingTimeout = nil }
        case .lifecycle(.retryScheduled(let retry)):
            retries += 1
            if pendingTimeout?.timeoutID == retry.firedTimeoutID { pendingTimeout = nil }
        case .domain(.needsAttention(let attention)):
            if !status.isEnded { status = .needsAttention(reason: "compensation of \(attention.stepName) failed: \(attention.reason)") }
        case .domain(.compensationResumed):
            if case .needsAttention = status { status = .running }
        case .lifecycle(.started), .domain:
            break
        }
    }

    func matches(_ filter: StatusFilter) -> Bool {
        switch (filter, status) {
        case (.running, .running), (.running, .needsAttention), (.needsAttention, .needsAttention), (.completed, .completed), (.failed, .failed): true
        default: false
        }
    }
}

/// One event of a process's history.
public struct ProcessHistoryEntry: Sendable, Hashable {
    /// The position in the process stream, from 1.
    public var version: Int
    /// The event's type name.
    public var eventType: String
    /// When it was recorded.
    public var recordedAt: Date
    /// The payload as JSON text.
    public var payload: String
    /// Correlation, causation, source message, trace.
    public var metadata: EventMetadata

    init(_ stored: StoredEvent) {
        version = stored.streamVersion
        eventType = stored.eventType
        recordedAt = stored.recordedAt
        payload = String(decoding: stored.payload, as: UTF8.self)
        metadata = stored.metadata
    }
}
