import EventCore
import Foundation
import Synchronization

/// Runs when a timeout arrives. It reads only the lifecycle events of the process stream, so it runs for any
/// kind of process without knowing its definition: the retry policy was recorded with `ProcessStarted`.
///
/// - A timeout that is not the pending one (cancelled, superseded, already fired), or that arrives after the
///   process ended, writes nothing.
/// - A timeout that arrives before it is due throws ``ProcessTimeoutError/notYetDue(_:)``; nothing is written
///   and no idempotency key is recorded, so the same message can be delivered again later.
/// - Otherwise it writes `RetryScheduled` and the next `TimeoutScheduled`, or `ProcessFailed` once the
///   retries are used up or the deadline passed.
public struct ProcessTimeoutCommand: Command {
    /// The process stream.
    public var processID: StreamID
    /// The timeout that arrived.
    public var timeoutID: String
    /// When it arrived.
    public var firedAt: Date
    /// Where the reason of a decision to ignore the timeout is kept, for the caller that runs the command.
    let ignored: IgnoredReasonRecord?

    /// Creates the command.
    public init(processID: StreamID, timeoutID: String, firedAt: Date) {
        self.init(processID: processID, timeoutID: timeoutID, firedAt: firedAt, recordingIgnoredReasonIn: nil)
    }

    init(processID: StreamID, timeoutID: String, firedAt: Date, recordingIgnoredReasonIn ignored: IgnoredReasonRecord?) {
        self.processID = processID
        self.timeoutID = timeoutID
        self.firedAt = firedAt
        self.ignored = ignored
    }

    /// Creates the command for a scheduled timeout arriving at `firedAt`.
    public init(_ timeout: ScheduledTimeout, firedAt: Date) {
        self.init(processID: timeout.processID, timeoutID: timeout.timeoutID, firedAt: firedAt)
    }

    /// The process stream only.
    public var readStreams: [StreamID] { [processID] }
    /// A process with no events.
    public var initialState: ProcessLifecycle { ProcessLifecycle(processID: processID) }
    /// Folds a lifecycle event.
    public func apply(_ state: inout ProcessLifecycle, _ event: ProcessLifecycleEvent) {
        state.apply(event)
    }
    /// Folds a lifecycle event and counts it toward the version (other events are counted by the executor's
    /// versions, read in `handle`).
    public func apply(_ state: inout ProcessLifecycle, _ event: ProcessLifecycleEvent, recorded: StoredEvent) {
        state.count(recorded)
        state.apply(event)
    }

    /// See the type's description.
    public func handle(_ state: ProcessLifecycle, context: CommandContext) throws -> [StreamWrite<ProcessLifecycleEvent>] {
        var lifecycle = state
        // Events of the process's own vocabulary are not folded here; the context knows the true version.
        let version = context.versions[processID] ?? 0
        lifecycle.align(version: version)
        switch lifecycle.decideTimeout(timeoutID: timeoutID, firedAt: firedAt) {
        case .ignore(let reason):
            ignored?.keep(reason)
            return []
        case .notYetDue(let dueAt):
            throw ProcessTimeoutError.notYetDue(dueAt)
        case .retry(let retry, let next):
            return [
                try context.write(.retryScheduled(retry), to: processID),
                try context.write(.timeoutScheduled(next), to: processID),
            ]
        case .fail(let reason):
            guard let started = lifecycle.started else { return [] }
            return [
                try context.write(.failed(ProcessFailed(processType: started.processType, reason: reason, startedAt: started.startedAt, failedAt: firedAt)), to: processID)
            ]
        }
    }
}

/// The reason of the last decision to ignore a timeout, kept by ``ProcessTimeoutCommand/handle(_:context:)`` so that
/// the caller need not fold the process again to report it (the executor may decide more than once; the last
/// decision is the one that counts).
final class IgnoredReasonRecord: Sendable {
    private let reason = Mutex<TimeoutIgnoredReason?>(nil)

    func keep(_ value: TimeoutIgnoredReason) { reason.withLock { $0 = value } }
    var value: TimeoutIgnoredReason? { reason.withLock { $0 } }
}

/// Why a timeout could not be handled now.
public enum ProcessTimeoutError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The timeout arrived before `dueAt`; deliver it again then.
    case notYetDue(Date)

    /// A sentence for logs.
    public var description: String {
        switch self {
        case .notYetDue(let date): "the timeout is not due before \(date)"
        }
    }
}
