import EventCore
import Foundation

/// Where a process stands.
public enum ProcessStatus: Sendable, Hashable, CustomStringConvertible {
    /// No `ProcessStarted` yet.
    case notStarted
    /// Started and not ended.
    case running
    /// Reached its goal.
    case completed
    /// Ended without reaching its goal.
    case failed(reason: String)

    /// Whether the process ended (completed or failed): nothing more is written to it.
    public var isTerminal: Bool {
        switch self {
        case .completed, .failed: true
        case .notStarted, .running: false
        }
    }

    /// `running`, `failed: <reason>`, ...
    public var description: String {
        switch self {
        case .notStarted: "not started"
        case .running: "running"
        case .completed: "completed"
        case .failed(let reason): "failed: \(reason)"
        }
    }
}

/// The lifecycle of one process, folded from the lifecycle events of its stream: status, start, the pending
/// timeout and the retries. Both ``AdvanceProcess`` and ``ProcessTimeoutCommand`` decide on it.
public struct ProcessLifecycle: Sendable, Hashable {
    /// The process stream.
    public let processID: StreamID
    /// Where the process stands.
    public private(set) var status: ProcessStatus = .notStarted
    /// The start event, once folded.
    public private(set) var started: ProcessStarted?
    /// The one timeout that may still fire.
    public private(set) var pendingTimeout: TimeoutScheduled?
    /// Retries since the process last made progress (the attempt number of the latest timeout).
    public private(set) var currentRetries = 0
    /// Retries over the whole life of the process.
    public private(set) var totalRetries = 0
    /// When the process completed or failed.
    public private(set) var endedAt: Date?
    /// The version of the process stream as folded: the number of events it holds.
    public private(set) var version = 0
    private var scheduledTimeouts: Set<String> = []
    private var cancelledTimeouts: Set<String> = []
    private var firedTimeouts: Set<String> = []

    /// A process with no events.
    public init(processID: StreamID) {
        self.processID = processID
    }

    /// Counts one event of the process stream, of any vocabulary, toward ``version``.
    public mutating func count(_ recorded: StoredEvent) {
        if recorded.streamID == processID { version = max(version, recorded.streamVersion) }
    }

    /// Takes `streamVersion` as the version when it is newer, for folds that skip events of other vocabularies.
    public mutating func align(version streamVersion: Int) {
        version = max(version, streamVersion)
    }

    /// Folds one lifecycle event.
    public mutating func apply(_ event: ProcessLifecycleEvent) {
        switch event {
        case .started(let started):
            self.started = started
            status = .running
        case .timeoutScheduled(let timeout):
            pendingTimeout = timeout
            currentRetries = timeout.attempt
            scheduledTimeouts.insert(timeout.timeoutID)
        case .timeoutCancelled(let cancelled):
            cancelledTimeouts.insert(cancelled.timeoutID)
            if pendingTimeout?.timeoutID == cancelled.timeoutID { pendingTimeout = nil }
        case .retryScheduled(let retry):
            firedTimeouts.insert(retry.firedTimeoutID)
            if pendingTimeout?.timeoutID == retry.firedTimeoutID { pendingTimeout = nil }
            currentRetries = retry.attempt
            totalRetries += 1
        case .completed(let completed):
            status = .completed
            endedAt = completed.completedAt
            pendingTimeout = nil
        case .failed(let failed):
            status = .failed(reason: failed.reason)
            endedAt = failed.failedAt
            pendingTimeout = nil
        }
    }

    /// The pending timeout with the process's retry policy, as the chapter's `ProcessTimeout`.
    public var timeout: ProcessTimeout? {
        guard let pendingTimeout, let started else { return nil }
        return ProcessTimeout(timeoutID: pendingTimeout.timeoutID, timeoutAt: pendingTimeout.dueAt, retryPolicy: started.retryPolicy, currentRetries: pendingTimeout.attempt)
    }

    /// Why a timeout that arrives now would change nothing, or `nil` if it is the pending one.
    public func reasonToIgnore(timeoutID: String) -> TimeoutIgnoredReason? {
        switch status {
        case .notStarted: return .unknownProcess
        case .completed, .failed: return .processEnded
        case .running: break
        }
        if pendingTimeout?.timeoutID == timeoutID { return nil }
        if cancelledTimeouts.contains(timeoutID) { return .cancelled }
        if firedTimeouts.contains(timeoutID) { return .alreadyFired }
        if scheduledTimeouts.contains(timeoutID) { return .superseded }
        return .unknownTimeout
    }

    /// What a timeout arriving at `firedAt` decides. Pure; ``ProcessTimeoutCommand`` writes the result.
    public func decideTimeout(timeoutID: String, firedAt: Date) -> TimeoutDecision {
        if let reason = reasonToIgnore(timeoutID: timeoutID) { return .ignore(reason) }
        guard let timeout, let started else { return .ignore(.unknownTimeout) }
        if firedAt < timeout.timeoutAt { return .notYetDue(timeout.timeoutAt) }
        if let deadline = started.deadline, firedAt >= deadline {
            return .fail(reason: "the process passed its deadline")
        }
        guard timeout.shouldRetry else {
            return .fail(reason: "the process made no progress after \(timeout.currentRetries) retries")
        }
        var retryAt = timeout.nextTimeout(after: firedAt)
        if let deadline = started.deadline { retryAt = min(retryAt, deadline) }
        let attempt = timeout.currentRetries + 1
        return .retry(
            RetryScheduled(firedTimeoutID: timeoutID, attempt: attempt, retryAt: retryAt),
            next: TimeoutScheduled(timeoutID: TimeoutID.make(processID: processID, version: version + 2), dueAt: retryAt, attempt: attempt)
        )
    }
}

/// A pending timeout with the rules for retrying it: the chapter's `ProcessTimeout`.
public struct ProcessTimeout: Sendable, Hashable {
    /// The timeout.
    public var timeoutID: String
    /// When it fires.
    public var timeoutAt: Date
    /// How retries are spaced and how many there may be.
    public var retryPolicy: RetryPolicy
    /// Retries already scheduled since the process last made progress.
    public var currentRetries: Int

    /// Creates the value.
    public init(timeoutID: String, timeoutAt: Date, retryPolicy: RetryPolicy, currentRetries: Int) {
        self.timeoutID = timeoutID
        self.timeoutAt = timeoutAt
        self.retryPolicy = retryPolicy
        self.currentRetries = currentRetries
    }

    /// The most retries the policy allows.
    public var maxRetries: Int { retryPolicy.maxRetries }

    /// Whether another retry is allowed.
    public var shouldRetry: Bool { currentRetries < retryPolicy.maxRetries }

    /// The delay before the next retry: the policy's delay for retry `currentRetries + 1`, with the policy's
    /// jitter drawn from the timeout id, so deciding twice gives the same delay.
    public var nextRetryDelay: Duration {
        retryPolicy.delay(beforeRetry: currentRetries + 1, unitRandom: TimeoutID.unitValue(of: timeoutID))
    }

    /// When the next retry is due if the timeout fires at `now`.
    public func nextTimeout(after now: Date) -> Date {
        now.addingTimeInterval(nextRetryDelay.timeInterval)
    }
}

/// What a timeout's arrival decides.
public enum TimeoutDecision: Sendable, Hashable {
    /// Another chance: record the retry and schedule the next timeout.
    case retry(RetryScheduled, next: TimeoutScheduled)
    /// No more chances: the process fails.
    case fail(reason: String)
    /// The timeout changes nothing.
    case ignore(TimeoutIgnoredReason)
    /// The timeout arrived before it was due; deliver it again at the date given.
    case notYetDue(Date)
}

/// Why a timeout changed nothing.
public enum TimeoutIgnoredReason: String, Sendable, Hashable, Codable {
    /// The process stream has no `ProcessStarted`.
    case unknownProcess
    /// The process completed or failed before the timeout arrived.
    case processEnded
    /// The timeout was cancelled.
    case cancelled
    /// A newer timeout replaced it.
    case superseded
    /// It fired before and was handled.
    case alreadyFired
    /// The process never scheduled it.
    case unknownTimeout
}

/// Timeout ids: the process stream and the version at which the `TimeoutScheduled` event is stored, so an id
/// is unique across the store and the same decision always produces the same id.
public enum TimeoutID {
    /// `<processID>@<version>`.
    public static func make(processID: StreamID, version: Int) -> String {
        "\(processID.rawValue)@\(version)"
    }

    /// A number in `0..<1` derived from `id` (FNV-1a), the jitter draw of a retry.
    static func unitValue(of id: String) -> Double {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in id.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        return Double(hash >> 11) / Double(UInt64(1) << 53)
    }
}
