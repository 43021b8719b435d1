import Foundation

/// The one error type of the event store layer: a struct with an extensible ``Code``, the context a caller needs
/// to react, and whether retrying can help.
///
/// The ``description`` names the code, a safe summary and the streams involved. It never prints payloads, the
/// text of an underlying error (which may carry connection details) or anything else that could hold a secret.
public struct EventStoreError: Error, Sendable, CustomStringConvertible {
    /// What went wrong. New codes may be added in later versions, so switch over it with a `default` case.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        enum Base: String, Sendable {
            case invalidStreamID
            case invalidIdempotencyKey
            case invalidRequest
            case undeclaredStream
            case versionConflict
            case payloadTooLarge
            case encodingFailed
            case undecodableEvent
            case corruptedRecord
            case tooManyDiscoveryRounds
            case storeUnavailable
            case storeFailure
            case invalidConfiguration
        }

        let base: Base

        /// A stream id was empty, too long or held a control character.
        public static let invalidStreamID = Code(base: .invalidStreamID)
        /// An idempotency key was empty or too long.
        public static let invalidIdempotencyKey = Code(base: .invalidIdempotencyKey)
        /// An append or query was malformed (for example the same event id twice, an empty event type or a bad limit).
        public static let invalidRequest = Code(base: .invalidRequest)
        /// A command wrote to a stream it neither declared nor discovered through its `StreamResolver`.
        public static let undeclaredStream = Code(base: .undeclaredStream)
        /// A stream's version was not the expected one; ``EventStoreError/conflicts`` lists every stream. Retryable.
        public static let versionConflict = Code(base: .versionConflict)
        /// An event payload was larger than the configured limit.
        public static let payloadTooLarge = Code(base: .payloadTooLarge)
        /// An event could not be encoded.
        public static let encodingFailed = Code(base: .encodingFailed)
        /// A stored event could not be decoded into the command's event type. It is reported, never skipped.
        public static let undecodableEvent = Code(base: .undecodableEvent)
        /// A stored row could not be turned into a ``StoredEvent`` (bad stream id, bad event id, ...).
        public static let corruptedRecord = Code(base: .corruptedRecord)
        /// A command kept asking its `StreamResolver` for new streams beyond the configured number of rounds.
        public static let tooManyDiscoveryRounds = Code(base: .tooManyDiscoveryRounds)
        /// The store could not be reached or the connection broke. Retryable; for an append the outcome may be
        /// unknown, so retry with the same idempotency key.
        public static let storeUnavailable = Code(base: .storeUnavailable)
        /// The store failed in a way a retry is not expected to fix.
        public static let storeFailure = Code(base: .storeFailure)
        /// A store or executor was configured with values it cannot work with.
        public static let invalidConfiguration = Code(base: .invalidConfiguration)

        /// The code's name, for logs.
        public var description: String { base.rawValue }
    }

    /// What went wrong.
    public var code: Code
    /// A short, secret-free explanation.
    public var message: String
    /// The stream concerned, if one stream is.
    public var streamID: StreamID?
    /// For a version conflict: every stream of the write with its expected and actual version.
    public var conflicts: [StreamVersionConflict]
    /// The global position of the stored event concerned, if any.
    public var globalPosition: Int?
    /// The number of attempts the executor made before giving up, if it gave up.
    public var attempts: Int?
    /// The error that caused this one, if any. Not printed by ``description``.
    public var underlying: (any Error)?
    /// Whether trying the same operation again may succeed.
    public var isRetryable: Bool

    /// Creates an error; `isRetryable` defaults to what the code implies.
    public init(
        _ code: Code,
        _ message: String,
        streamID: StreamID? = nil,
        conflicts: [StreamVersionConflict] = [],
        globalPosition: Int? = nil,
        attempts: Int? = nil,
        underlying: (any Error)? = nil,
        isRetryable: Bool? = nil
    ) {
        self.code = code
        self.message = message
        self.streamID = streamID
        self.conflicts = conflicts
        self.globalPosition = globalPosition
        self.attempts = attempts
        self.underlying = underlying
        self.isRetryable = isRetryable ?? (code == .versionConflict || code == .storeUnavailable)
    }

    /// Code, message and context; never payloads or the underlying error's text (only its type).
    public var description: String {
        var parts = ["EventStoreError(\(code)): \(message)"]
        if let streamID { parts.append("stream: \(streamID)") }
        if !conflicts.isEmpty {
            parts.append("streams: " + conflicts.map(\.description).joined(separator: ", "))
        }
        if let globalPosition { parts.append("global position: \(globalPosition)") }
        if let attempts { parts.append("attempts: \(attempts)") }
        if let underlying { parts.append("caused by: \(type(of: underlying))") }
        return parts.joined(separator: "; ")
    }
}

/// One stream of a conflicting write: the version the writer expected and the version the store had.
public struct StreamVersionConflict: Sendable, Hashable, CustomStringConvertible {
    /// The stream.
    public var streamID: StreamID
    /// The version the writer expected (the number of events it had read), or `nil` if it expected any version.
    public var expected: Int?
    /// The version the store had when the write was checked.
    public var actual: Int

    /// Creates the entry for one stream.
    public init(streamID: StreamID, expected: Int?, actual: Int) {
        self.streamID = streamID
        self.expected = expected
        self.actual = actual
    }

    /// Whether this stream is one of the causes of the conflict.
    public var isMismatch: Bool { expected.map { $0 != actual } ?? false }

    /// `stream expected 2, actual 3`.
    public var description: String {
        "\(streamID) expected \(expected.map(String.init) ?? "any"), actual \(actual)"
    }
}
