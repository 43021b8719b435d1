import EventCore
import Foundation
import Processes

/// The operator's view of the processes in the store: list them, show one with its timeline, retry a saga
/// that needs attention, list and cancel pending timeouts.
///
/// `fleet process`, `fleet timeouts` and the worker's admin API are built on it, so they answer alike.
/// Input is checked before anything is written: an error other than a store failure means nothing changed.
public struct ProcessInspection: Sendable {
    /// Retries the compensation of one kind of saga that needs attention.
    public struct SagaRetry: Sendable {
        /// The process type it retries (the saga type).
        public let processType: String
        private let body: @Sendable (_ runner: SagaRunner, _ businessID: String, _ operatorName: String) async throws -> SagaPhase

        /// A retry of the saga `Definition`.
        public init<Definition: SagaDefinition>(_ definition: Definition.Type) {
            processType = Definition.sagaType
            body = { runner, businessID, operatorName in
                try await runner.retryCompensation(Definition.self, businessID: businessID, by: operatorName).phase
            }
        }

        func callAsFunction(runner: SagaRunner, businessID: String, by operatorName: String) async throws -> SagaPhase {
            try await body(runner, businessID, operatorName)
        }
    }

    /// The store.
    public let store: any EventStore
    /// The sagas that can be retried, by process type.
    public let retries: [String: SagaRetry]

    /// An inspection of `store`; `retries` names the sagas ``retry(_:by:)`` knows how to run on.
    public init(store: any EventStore, retries: [SagaRetry] = []) {
        self.store = store
        self.retries = Dictionary(retries.map { ($0.processType, $0) }, uniquingKeysWith: { first, _ in first })
    }

    /// The state names a list can be filtered by.
    public static var stateNames: [String] { ProcessSummary.StatusFilter.allCases.map(\.rawValue) }

    /// Parses a state filter (`running`, `needsAttention`, `completed`, `failed`).
    /// - Throws: ``OperationsError/Code/invalidArgument`` naming the states accepted.
    public static func stateFilter(parsing text: String) throws(OperationsError) -> ProcessSummary.StatusFilter {
        guard let filter = ProcessSummary.StatusFilter(rawValue: text) else {
            throw OperationsError(.invalidArgument, "unknown state \"\(text)\": use \(stateNames.joined(separator: ", "))")
        }
        return filter
    }

    /// Every process, oldest first, optionally only those in `state` and of `processType`.
    public func list(state: ProcessSummary.StatusFilter? = nil, processType: String? = nil) async throws -> [ProcessRow] {
        try await ProcessCatalog(store: store).processes(status: state, processType: processType).map(ProcessRow.init)
    }

    /// The summary of process `id` (its stream id).
    /// - Throws: ``OperationsError/Code/notFound`` when the store has no such process.
    public func summary(of id: String) async throws -> ProcessSummary {
        guard let summary = try await ProcessCatalog(store: store).processes().first(where: { $0.processID.description == id }) else {
            throw OperationsError(.notFound, "no process \"\(id)\" in the store (fleet process list shows them)")
        }
        return summary
    }

    /// Process `id` with its current step and its history.
    /// - Throws: ``OperationsError/Code/notFound`` when the store has no such process.
    public func show(_ id: String) async throws -> ProcessDetail {
        let summary = try await summary(of: id)
        let history = try await ProcessCatalog(store: store).history(of: summary.processID)
        // The step is the last step-bearing event: its type names where the process stands.
        let step = history.last(where: { !["TimeoutScheduled", "TimeoutCancelled", "ProcessStarted"].contains($0.eventType) })?.eventType
        return ProcessDetail(process: ProcessRow(summary), step: step, history: history.map(ProcessDetail.Entry.init))
    }

    /// Resumes the compensation of saga `id`, which needs attention, as `operatorName`, and runs it on.
    /// - Throws: ``OperationsError/Code/notFound`` for an unknown process, ``OperationsError/Code/notApplicable``
    ///   for a process that does not need attention or whose type has no retry.
    public func retry(_ id: String, by operatorName: String) async throws -> ProcessRetryReport {
        let summary = try await summary(of: id)
        guard case .needsAttention = summary.status else {
            throw OperationsError(.notApplicable, "process \(id) is \(summary.status): only a saga that needs attention can be retried")
        }
        guard let retry = retries[summary.processType] else {
            throw OperationsError(.notApplicable, "no saga definition for process type \(summary.processType)")
        }
        let runner = SagaRunner(runtime: ProcessRuntime(executor: CommandExecutor(store: store)))
        let phase = try await retry(runner: runner, businessID: summary.businessID, by: operatorName)
        let after = try await self.summary(of: id)
        return ProcessRetryReport(process: id, phase: phase.rawValue, state: after.status.description)
    }

    /// The pending timeouts of running processes, earliest first.
    public func pendingTimeouts() async throws -> [PendingTimeoutRow] {
        try await scheduler.pending().map(PendingTimeoutRow.init)
    }

    /// Cancels the pending timeout named by its timeout id or its process id; returns it.
    /// - Throws: ``OperationsError/Code/notFound`` when no pending timeout has that id.
    public func cancelTimeout(_ id: String) async throws -> PendingTimeoutRow {
        let scheduler = self.scheduler
        guard let timeout = try await scheduler.pending().first(where: { $0.timeoutID == id || $0.processID.description == id }) else {
            throw OperationsError(.notFound, "no pending timeout \"\(id)\" (fleet timeouts list shows them)")
        }
        try await scheduler.cancel(CancelledTimeout(processID: timeout.processID, timeoutID: timeout.timeoutID))
        return PendingTimeoutRow(timeout)
    }

    private var scheduler: StoreTimeoutScheduler {
        StoreTimeoutScheduler(runtime: ProcessRuntime(executor: CommandExecutor(store: store)), clock: SystemProcessClock())
    }
}

/// A process as the operator's tools print it.
public struct ProcessRow: Sendable, Hashable, Codable {
    /// The process id (its stream id).
    public var processID: String
    /// The kind of process.
    public var processType: String
    /// The business id.
    public var businessID: String
    /// `running`, `needs attention: <reason>`, `completed`, `failed: <reason>`.
    public var state: String
    /// When it started.
    public var startedAt: Date
    /// When it ended, if it did.
    public var endedAt: Date?
    /// Retries over its life.
    public var retries: Int
    /// The timeout still to fire, if any.
    public var pendingTimeout: PendingTimeoutRow?

    /// The row of `summary`.
    public init(_ summary: ProcessSummary) {
        processID = summary.processID.description
        processType = summary.processType
        businessID = summary.businessID
        state = summary.status.description
        startedAt = summary.startedAt
        endedAt = summary.endedAt
        retries = summary.retries
        pendingTimeout = summary.pendingTimeout.map {
            PendingTimeoutRow(processID: summary.processID.description, timeoutID: $0.timeoutID, dueAt: $0.dueAt, attempt: $0.attempt)
        }
    }
}

/// A pending timeout as the operator's tools print it.
public struct PendingTimeoutRow: Sendable, Hashable, Codable {
    /// The process it belongs to.
    public var processID: String
    /// The timeout's id.
    public var timeoutID: String
    /// When it is due.
    public var dueAt: Date
    /// Which attempt of the step it guards (0 for the first).
    public var attempt: Int

    /// A row.
    public init(processID: String, timeoutID: String, dueAt: Date, attempt: Int) {
        self.processID = processID
        self.timeoutID = timeoutID
        self.dueAt = dueAt
        self.attempt = attempt
    }

    /// The row of a scheduled timeout.
    public init(_ timeout: ScheduledTimeout) {
        self.init(processID: timeout.processID.description, timeoutID: timeout.timeoutID, dueAt: timeout.dueAt, attempt: timeout.attempt)
    }
}

/// One process with its current step and its history as a timeline.
public struct ProcessDetail: Sendable, Hashable, Codable {
    /// One event of the history.
    public struct Entry: Sendable, Hashable, Codable {
        /// The position in the process stream, from 1.
        public var version: Int
        /// The event's type name.
        public var eventType: String
        /// When it was recorded.
        public var recordedAt: Date
        /// The payload as JSON text.
        public var payload: String

        /// The entry of a history event.
        public init(_ entry: ProcessHistoryEntry) {
            version = entry.version
            eventType = entry.eventType
            recordedAt = entry.recordedAt
            payload = entry.payload
        }
    }

    /// The process.
    public var process: ProcessRow
    /// The type of the last event that moved it on, if any.
    public var step: String?
    /// Every event of the process stream, oldest first.
    public var history: [Entry]
}

/// What a retry did.
public struct ProcessRetryReport: Sendable, Hashable, Codable {
    /// The process id.
    public var process: String
    /// The saga's phase after the retry (`compensated`, or `needsAttention` again).
    public var phase: String
    /// The process's state after the retry.
    public var state: String
}
