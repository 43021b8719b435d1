import EventCore
import Foundation

/// A process manager: the state it keeps, the events it records, and how it reacts to triggers.
///
/// The framework around it (``AdvanceProcess``) folds the process stream, starts the process on its first
/// trigger, ignores triggers after it ended, enforces the deadline, schedules and supersedes timeouts, and
/// records completion and failure. The definition only decides, without I/O and without reading a clock.
public protocol ProcessDefinition: Sendable {
    /// What the process knows, folded from its own events.
    associatedtype State: Sendable
    /// The process's own events. Its ``DomainEvent/handles(eventType:)`` must name only its own type names.
    associatedtype Event: DomainEvent
    /// What makes the process move: usually one case per kind of external event.
    associatedtype Trigger: Sendable

    /// The kind of process, the prefix of its stream ids, such as `order-fulfillment`.
    static var processType: String { get }

    /// The state before any event.
    var initialState: State { get }

    /// When timeouts fire and how often they are retried.
    var timeoutPolicy: ProcessTimeoutPolicy { get }

    /// Streams besides the process stream whose events the process folds (their events that `Event`
    /// handles). Their versions take part in the conflict check. None by default.
    func relatedStreams(businessID: String) -> [StreamID]

    /// Whether `trigger` may start a process that has not started yet. Every trigger may, by default.
    func startsProcess(on trigger: Trigger) -> Bool

    /// Folds one of the process's own events.
    func apply(_ event: Event, to state: inout State)

    /// Decides how the process reacts to `trigger` at `now`. Called only for a running process that is within
    /// its deadline. Deciding nothing (``ProcessDecision/nothing``) is how duplicates and stale triggers end.
    func decide(_ trigger: Trigger, in process: ProcessSnapshot<State>, at now: Date) throws -> ProcessDecision<Event>
}

extension ProcessDefinition {
    /// None.
    public func relatedStreams(businessID: String) -> [StreamID] { [] }

    /// Every trigger starts the process.
    public func startsProcess(on trigger: Trigger) -> Bool { true }

    /// The stream of the process about `businessID`: `<processType>-<businessID>`.
    public static func processID(for businessID: String) throws(EventStoreError) -> StreamID {
        try ProcessID.derive(processType: processType, businessID: businessID)
    }
}

/// How a process's timeouts behave.
public struct ProcessTimeoutPolicy: Sendable, Hashable {
    /// How long the process may wait for progress before a timeout fires; `nil` for no step timeouts.
    public var stepTimeout: Duration?
    /// How long the whole process may take from its start; `nil` for no deadline.
    public var overallTimeout: Duration?
    /// How a fired timeout is retried, and how many times, before the process fails.
    public var retryPolicy: RetryPolicy

    /// Creates a policy.
    public init(stepTimeout: Duration?, overallTimeout: Duration?, retryPolicy: RetryPolicy) {
        self.stepTimeout = stepTimeout
        self.overallTimeout = overallTimeout
        self.retryPolicy = retryPolicy
    }

    /// No timeouts at all.
    public static let none = ProcessTimeoutPolicy(stepTimeout: nil, overallTimeout: nil, retryPolicy: .never)

    /// When the next step timeout is due for a step beginning at `now`, within `deadline`.
    func nextDue(after now: Date, deadline: Date?) -> Date? {
        let step = stepTimeout.map { now.addingTimeInterval($0.timeInterval) }
        switch (step, deadline) {
        case let (step?, deadline?): return min(step, deadline)
        case let (step?, nil): return step
        case let (nil, deadline?): return deadline
        case (nil, nil): return nil
        }
    }
}

/// A process as its definition sees it when deciding: the lifecycle and the definition's own state.
public struct ProcessSnapshot<State: Sendable>: Sendable {
    /// Status, start, pending timeout, retries.
    public var lifecycle: ProcessLifecycle
    /// The definition's state.
    public var state: State

    /// Creates a snapshot.
    public init(lifecycle: ProcessLifecycle, state: State) {
        self.lifecycle = lifecycle
        self.state = state
    }

    /// The process stream.
    public var processID: StreamID { lifecycle.processID }
    /// Where the process stands.
    public var status: ProcessStatus { lifecycle.status }
}

extension ProcessSnapshot: Equatable where State: Equatable {}

/// What a process decided in reaction to a trigger.
public struct ProcessDecision<Event: Sendable>: Sendable {
    /// Where the decision leaves the process.
    public enum Outcome: Sendable, Hashable {
        /// Still running.
        case running
        /// Goal reached: `ProcessCompleted` is recorded after the events.
        case completed
        /// Given up: `ProcessFailed` is recorded after the events.
        case failed(reason: String)
    }

    /// The process's own events to record, in order.
    public var events: [Event]
    /// Where the process ends up.
    public var outcome: Outcome
    /// Whether the process made progress, which supersedes the pending timeout with a fresh step timeout and
    /// resets the retry count.
    public var madeProgress: Bool

    /// Creates a decision.
    public init(events: [Event], outcome: Outcome = .running, madeProgress: Bool) {
        self.events = events
        self.outcome = outcome
        self.madeProgress = madeProgress
    }

    /// Nothing to record (a duplicate, a stale or irrelevant trigger).
    public static var nothing: ProcessDecision { ProcessDecision(events: [], madeProgress: false) }

    /// Record `events`; the process keeps running and made progress.
    public static func progress(_ events: [Event]) -> ProcessDecision { ProcessDecision(events: events, madeProgress: true) }

    /// Record `events`, then complete the process.
    public static func complete(_ events: [Event]) -> ProcessDecision { ProcessDecision(events: events, outcome: .completed, madeProgress: true) }

    /// Record `events`, then fail the process for `reason`.
    public static func fail(_ reason: String, events: [Event] = []) -> ProcessDecision {
        ProcessDecision(events: events, outcome: .failed(reason: reason), madeProgress: false)
    }
}

extension ProcessDefinition {
    /// Folds the events of a process stream (and of related streams) as ``AdvanceProcess`` does.
    public func fold(_ events: [StoredEvent], processID: StreamID) throws -> ProcessSnapshot<State> {
        var snapshot = ProcessSnapshot(lifecycle: ProcessLifecycle(processID: processID), state: initialState)
        let codec = EventCodec()
        for stored in events {
            snapshot.lifecycle.count(stored)
            switch try codec.decode(stored, as: ProcessEvent<Event>.self) {
            case .lifecycle(let event)?:
                if stored.streamID == processID { snapshot.lifecycle.apply(event) }
            case .domain(let event)?:
                apply(event, to: &snapshot.state)
            case nil:
                break
            }
        }
        return snapshot
    }

    /// The process about `businessID` as `store` holds it now.
    public func snapshot(businessID: String, in store: any EventStore) async throws -> ProcessSnapshot<State> {
        let processID = try Self.processID(for: businessID)
        let read = try await store.read([processID] + relatedStreams(businessID: businessID))
        return try fold(read.events, processID: processID)
    }
}
