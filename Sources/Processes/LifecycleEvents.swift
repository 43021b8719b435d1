import EventCore
import Foundation

/// A process began: what it is, what it is about, and the rules its timeouts follow.
public struct ProcessStarted: Codable, Sendable, Hashable {
    /// The kind of process, such as `order-fulfillment`.
    public var processType: String
    /// The business id the process is about, such as an order id.
    public var businessID: String
    /// When it started.
    public var startedAt: Date
    /// When the whole process must be over; past it the process fails.
    public var deadline: Date?
    /// How timeouts are retried before the process fails.
    public var retryPolicy: RetryPolicy

    /// Creates the event.
    public init(processType: String, businessID: String, startedAt: Date, deadline: Date?, retryPolicy: RetryPolicy) {
        self.processType = processType
        self.businessID = businessID
        self.startedAt = startedAt
        self.deadline = deadline
        self.retryPolicy = retryPolicy
    }
}

/// The process reached its goal. Carries the start time so its duration is known from this one event.
public struct ProcessCompleted: Codable, Sendable, Hashable {
    /// The kind of process.
    public var processType: String
    /// When the process started.
    public var startedAt: Date
    /// When it completed.
    public var completedAt: Date

    /// Creates the event.
    public init(processType: String, startedAt: Date, completedAt: Date) {
        self.processType = processType
        self.startedAt = startedAt
        self.completedAt = completedAt
    }
}

/// The process ended without reaching its goal.
public struct ProcessFailed: Codable, Sendable, Hashable {
    /// The kind of process.
    public var processType: String
    /// Why, for people.
    public var reason: String
    /// When the process started.
    public var startedAt: Date
    /// When it failed.
    public var failedAt: Date

    /// Creates the event.
    public init(processType: String, reason: String, startedAt: Date, failedAt: Date) {
        self.processType = processType
        self.reason = reason
        self.startedAt = startedAt
        self.failedAt = failedAt
    }
}

/// A timeout is now pending for the process: if nothing supersedes or cancels it, it fires at `dueAt`.
///
/// A process has at most one pending timeout; scheduling another supersedes the previous one.
public struct TimeoutScheduled: Codable, Sendable, Hashable {
    /// Unique across the store: the process stream and the version this event was stored at.
    public var timeoutID: String
    /// When it fires.
    public var dueAt: Date
    /// 0 for a first timeout, then the number of retries already scheduled before it.
    public var attempt: Int

    /// Creates the event.
    public init(timeoutID: String, dueAt: Date, attempt: Int) {
        self.timeoutID = timeoutID
        self.dueAt = dueAt
        self.attempt = attempt
    }
}

/// A pending timeout will not fire: the process moved on, ended, or an operator cancelled it.
public struct TimeoutCancelled: Codable, Sendable, Hashable {
    /// The timeout that no longer fires.
    public var timeoutID: String
    /// Why, for people.
    public var reason: String

    /// Creates the event.
    public init(timeoutID: String, reason: String) {
        self.timeoutID = timeoutID
        self.reason = reason
    }
}

/// A timeout fired before the process progressed; it gets another chance, announced by the next timeout.
public struct RetryScheduled: Codable, Sendable, Hashable {
    /// The timeout that fired.
    public var firedTimeoutID: String
    /// The retry's number: 1 for the first retry.
    public var attempt: Int
    /// When the next timeout is due.
    public var retryAt: Date

    /// Creates the event.
    public init(firedTimeoutID: String, attempt: Int, retryAt: Date) {
        self.firedTimeoutID = firedTimeoutID
        self.attempt = attempt
        self.retryAt = retryAt
    }
}

/// The events every process stream holds besides its own: start, end, timeouts and retries.
///
/// Payloads are a one-key object, the type name mapping to the event's fields, so a stored event reads the same
/// whichever process vocabulary decodes it.
public enum ProcessLifecycleEvent: DomainEvent, Hashable {
    /// See ``ProcessStarted``.
    case started(ProcessStarted)
    /// See ``ProcessCompleted``.
    case completed(ProcessCompleted)
    /// See ``ProcessFailed``.
    case failed(ProcessFailed)
    /// See ``TimeoutScheduled``.
    case timeoutScheduled(TimeoutScheduled)
    /// See ``TimeoutCancelled``.
    case timeoutCancelled(TimeoutCancelled)
    /// See ``RetryScheduled``.
    case retryScheduled(RetryScheduled)

    /// The stored type names of the lifecycle events.
    public enum TypeName {
        /// `ProcessStarted`.
        public static let started = "ProcessStarted"
        /// `ProcessCompleted`.
        public static let completed = "ProcessCompleted"
        /// `ProcessFailed`.
        public static let failed = "ProcessFailed"
        /// `TimeoutScheduled`.
        public static let timeoutScheduled = "TimeoutScheduled"
        /// `TimeoutCancelled`.
        public static let timeoutCancelled = "TimeoutCancelled"
        /// `RetryScheduled`.
        public static let retryScheduled = "RetryScheduled"
        /// All of them.
        public static let all: Set<String> = [started, completed, failed, timeoutScheduled, timeoutCancelled, retryScheduled]
    }

    /// The stored type name.
    public var eventType: String {
        switch self {
        case .started: TypeName.started
        case .completed: TypeName.completed
        case .failed: TypeName.failed
        case .timeoutScheduled: TypeName.timeoutScheduled
        case .timeoutCancelled: TypeName.timeoutCancelled
        case .retryScheduled: TypeName.retryScheduled
        }
    }

    /// Only the lifecycle type names; a process's own events are skipped.
    public static func handles(eventType: String) -> Bool { TypeName.all.contains(eventType) }

    /// Decodes `{"<TypeName>": {...}}`.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: EnvelopeKey.self)
        let key = try EnvelopeKey.single(in: container)
        guard let event = try Self.decode(key: key, in: container) else {
            throw DecodingError.dataCorruptedError(forKey: key, in: container, debugDescription: "\(key.stringValue) is not a process lifecycle event")
        }
        self = event
    }

    /// The lifecycle event under `key`, or `nil` if `key` names no lifecycle event.
    static func decode(key: EnvelopeKey, in container: KeyedDecodingContainer<EnvelopeKey>) throws -> ProcessLifecycleEvent? {
        switch key.stringValue {
        case TypeName.started: .started(try container.decode(ProcessStarted.self, forKey: key))
        case TypeName.completed: .completed(try container.decode(ProcessCompleted.self, forKey: key))
        case TypeName.failed: .failed(try container.decode(ProcessFailed.self, forKey: key))
        case TypeName.timeoutScheduled: .timeoutScheduled(try container.decode(TimeoutScheduled.self, forKey: key))
        case TypeName.timeoutCancelled: .timeoutCancelled(try container.decode(TimeoutCancelled.self, forKey: key))
        case TypeName.retryScheduled: .retryScheduled(try container.decode(RetryScheduled.self, forKey: key))
        default: nil
        }
    }

    /// Encodes `{"<TypeName>": {...}}`.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: EnvelopeKey.self)
        let key = EnvelopeKey(eventType)
        switch self {
        case .started(let event): try container.encode(event, forKey: key)
        case .completed(let event): try container.encode(event, forKey: key)
        case .failed(let event): try container.encode(event, forKey: key)
        case .timeoutScheduled(let event): try container.encode(event, forKey: key)
        case .timeoutCancelled(let event): try container.encode(event, forKey: key)
        case .retryScheduled(let event): try container.encode(event, forKey: key)
        }
    }
}

/// The single key of an event envelope: the event's type name.
struct EnvelopeKey: CodingKey, Hashable {
    let stringValue: String
    var intValue: Int? { nil }

    init(_ name: String) { stringValue = name }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }

    /// The one key of an envelope; anything else is corrupt.
    static func single(in container: KeyedDecodingContainer<EnvelopeKey>) throws -> EnvelopeKey {
        guard container.allKeys.count == 1, let key = container.allKeys.first else {
            throw DecodingError.dataCorrupted(DecodingError.Context(
                codingPath: container.codingPath,
                debugDescription: "an event payload must be an object with exactly one key, its type name; found \(container.allKeys.count)"
            ))
        }
        return key
    }
}
