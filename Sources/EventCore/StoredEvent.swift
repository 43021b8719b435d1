import Foundation

/// Where an event came from and which trace it belongs to. Carried to and from the broker unchanged.
///
/// Empty strings are treated as absent by every store, so `""` and `nil` read back the same (as `nil`).
public struct EventMetadata: Sendable, Hashable, Codable {
    /// The business conversation this event belongs to, such as an order id.
    public var correlationID: String?
    /// The id of the message or event that caused this one.
    public var causationID: String?
    /// The id of the broker message whose handling wrote this event.
    public var sourceMessageID: String?
    /// The W3C `traceparent` of the work that wrote this event.
    public var traceparent: String?

    /// Creates metadata; every field is optional.
    public init(correlationID: String? = nil, causationID: String? = nil, sourceMessageID: String? = nil, traceparent: String? = nil) {
        self.correlationID = correlationID
        self.causationID = causationID
        self.sourceMessageID = sourceMessageID
        self.traceparent = traceparent
    }

    /// The same metadata with empty strings turned into `nil`, as stores keep it.
    public var normalized: EventMetadata {
        func clean(_ value: String?) -> String? { value?.isEmpty == true ? nil : value }
        return EventMetadata(
            correlationID: clean(correlationID),
            causationID: clean(causationID),
            sourceMessageID: clean(sourceMessageID),
            traceparent: clean(traceparent)
        )
    }

    /// Fields set in `overrides` win; the others are taken from `self`.
    public func merged(with overrides: EventMetadata?) -> EventMetadata {
        guard let overrides else { return self }
        return EventMetadata(
            correlationID: overrides.correlationID ?? correlationID,
            causationID: overrides.causationID ?? causationID,
            sourceMessageID: overrides.sourceMessageID ?? sourceMessageID,
            traceparent: overrides.traceparent ?? traceparent
        )
    }
}

/// An event as the store recorded it.
public struct StoredEvent: Sendable, Hashable {
    /// The event's id (UUID version 7).
    public var id: EventID
    /// The stream it belongs to.
    public var streamID: StreamID
    /// Its version within the stream: 1 for the first event, then 2, 3, ... without gaps.
    public var streamVersion: Int
    /// Its position in the store's global order. Increasing in commit order; there may be gaps.
    public var globalPosition: Int
    /// The event's type name, as chosen by its ``DomainEvent/eventType``.
    public var eventType: String
    /// The encoded event (JSON for events written by the executor).
    public var payload: Data
    /// Correlation, causation, source message and trace context.
    public var metadata: EventMetadata
    /// When the store recorded it, to the microsecond.
    public var recordedAt: Date

    /// Creates a stored event; stores and tests use this.
    public init(
        id: EventID, streamID: StreamID, streamVersion: Int, globalPosition: Int, eventType: String,
        payload: Data, metadata: EventMetadata, recordedAt: Date
    ) {
        self.id = id
        self.streamID = streamID
        self.streamVersion = streamVersion
        self.globalPosition = globalPosition
        self.eventType = eventType
        self.payload = payload
        self.metadata = metadata
        self.recordedAt = recordedAt
    }
}

/// The key that makes an append idempotent: typically the consumer's name and the message id it is handling.
public struct IdempotencyKey: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The longest key accepted, in UTF-8 bytes.
    public static let maximumLength = 512

    /// The key's text.
    public let rawValue: String

    /// Validates a key; it must be non-empty and at most ``maximumLength`` UTF-8 bytes.
    public init(_ rawValue: String) throws(EventStoreError) {
        guard !rawValue.isEmpty, rawValue.utf8.count <= IdempotencyKey.maximumLength else {
            throw EventStoreError(.invalidIdempotencyKey, "an idempotency key must have 1 to \(IdempotencyKey.maximumLength) bytes, got \(rawValue.utf8.count)")
        }
        self.rawValue = rawValue
    }

    /// The key for `consumer` handling the message `messageID`: `consumer/messageID`.
    public init(consumer: String, messageID: String) throws(EventStoreError) {
        try self.init("\(consumer)/\(messageID)")
    }

    /// Decodes and validates a key stored as a plain string.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        do {
            try self.init(try container.decode(String.self))
        } catch let error as EventStoreError {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.message)
        }
    }

    /// Encodes the key as a plain string.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    /// The key's text.
    public var description: String { rawValue }
}

/// The store's time resolution: recorded-at times are kept to the microsecond by every store, so a time read
/// back equals the time written.
public enum RecordedTime {
    /// Microseconds since 1970 for `date`, rounded down.
    public static func microseconds(_ date: Date) -> Int64 {
        Int64((date.timeIntervalSince1970 * 1_000_000).rounded(.down))
    }

    /// The date `microseconds` after 1970.
    public static func date(microseconds: Int64) -> Date {
        Date(timeIntervalSince1970: Double(microseconds) / 1_000_000)
    }

    /// `date` cut to whole microseconds.
    public static func truncated(_ date: Date) -> Date {
        self.date(microseconds: microseconds(date))
    }
}
