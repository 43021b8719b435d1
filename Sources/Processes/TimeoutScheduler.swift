import EventCore
import Foundation

/// A timeout that is to fire for a process: what a scheduler keeps and what a timeout message carries.
public struct ScheduledTimeout: Sendable, Hashable, Codable {
    /// The process stream.
    public var processID: StreamID
    /// The timeout's id (see ``TimeoutID``).
    public var timeoutID: String
    /// When it is due.
    public var dueAt: Date
    /// 0 for a first timeout, then the retry number.
    public var attempt: Int

    /// Creates the value.
    public init(processID: StreamID, timeoutID: String, dueAt: Date, attempt: Int) {
        self.processID = processID
        self.timeoutID = timeoutID
        self.dueAt = dueAt
        self.attempt = attempt
    }

    /// The value for a `TimeoutScheduled` event of `processID`.
    public init(processID: StreamID, _ event: TimeoutScheduled) {
        self.init(processID: processID, timeoutID: event.timeoutID, dueAt: event.dueAt, attempt: event.attempt)
    }
}

/// A timeout that will not fire any more.
public struct CancelledTimeout: Sendable, Hashable, Codable {
    /// The process stream.
    public var processID: StreamID
    /// The timeout's id.
    public var timeoutID: String

    /// Creates the value.
    public init(processID: StreamID, timeoutID: String) {
        self.processID = processID
        self.timeoutID = timeoutID
    }
}

/// Makes timeouts fire. The event store stays the truth (a timeout is pending when its `TimeoutScheduled` is
/// the process's latest and the process runs); a scheduler only wakes the process up at the right time, and a
/// timeout that fires when it should not any more is ignored by ``ProcessTimeoutCommand``.
///
/// A broker-backed scheduler publishes a delayed message in `schedule`; the store-backed
/// ``StoreTimeoutScheduler`` serves the embedded mode and tests.
public protocol TimeoutScheduler: Sendable {
    /// Makes sure `timeout` fires at its due date. Scheduling the same timeout twice has one effect.
    func schedule(_ timeout: ScheduledTimeout) async throws
    /// Makes sure `timeout` does not fire (or is ignored when it does).
    func cancel(_ timeout: CancelledTimeout) async throws
    /// The timeouts still to fire, earliest first.
    func pending() async throws -> [ScheduledTimeout]
}

/// What a command did to processes, read off its ``CommandResult``: the events to publish and the timeouts a
/// worker must schedule or may drop. Built from the stored events, so it is the same for the original
/// execution and for a duplicate (a redelivered message finishes the publishing a crash interrupted).
public struct ProcessExecution: Sendable {
    /// The executor's result.
    public var result: CommandResult
    /// The timeouts the command scheduled, in order.
    public var timeoutsToSchedule: [ScheduledTimeout]
    /// The timeouts the command cancelled or superseded.
    public var timeoutsCancelled: [CancelledTimeout]

    /// Reads the timeouts off `result`.
    public init(_ result: CommandResult) {
        self.result = result
        var scheduled: [ScheduledTimeout] = []
        var cancelled: [CancelledTimeout] = []
        let codec = EventCodec()
        // Only the timeout events matter here: the others are not even decoded.
        for stored in result.events
        where stored.eventType == ProcessLifecycleEvent.TypeName.timeoutScheduled || stored.eventType == ProcessLifecycleEvent.TypeName.timeoutCancelled {
            guard let event = try? codec.decode(stored, as: ProcessLifecycleEvent.self) else { continue }
            switch event {
            case .timeoutScheduled(let timeout):
                scheduled.append(ScheduledTimeout(processID: stored.streamID, timeout))
            case .timeoutCancelled(let timeout):
                cancelled.append(CancelledTimeout(processID: stored.streamID, timeoutID: timeout.timeoutID))
                scheduled.removeAll { $0.processID == stored.streamID && $0.timeoutID == timeout.timeoutID }
            default:
                break
            }
        }
        timeoutsToSchedule = scheduled
        timeoutsCancelled = cancelled
    }

    /// The stored events to publish, in global order.
    public var eventsToPublish: [StoredEvent] { result.events }

    /// Whether this execution committed (rather than finding a duplicate or deciding nothing).
    public var committed: Bool { result.outcome == .committed }
}
