import Foundation

/// An event a command can write and fold: `Codable`, with a stable type name stored beside its payload.
///
/// A command's `Event` is usually an enum of the events of its streams. Streams may also hold events of other
/// vocabularies (written by other commands); override ``handles(eventType:)`` to say which type names this
/// type decodes, and the executor will skip the others while still counting them for the stream version.
/// An event whose type this type handles but whose payload does not decode is reported as
/// ``EventStoreError/Code/undecodableEvent``, never skipped.
public protocol DomainEvent: Codable, Sendable {
    /// The name stored with the event, such as `MoneyDeposited`. Keep it stable: stored events keep it forever.
    var eventType: String { get }

    /// Whether this type decodes events stored under `eventType`. The default handles every type.
    static func handles(eventType: String) -> Bool
}

extension DomainEvent {
    /// Handles every type name.
    public static func handles(eventType: String) -> Bool { true }
}

/// Turns domain events into payload bytes and back: JSON with sorted keys and ISO 8601 dates.
public struct EventCodec: Sendable {
    private let encoder: JSONEncoder
    private let decoder: JSONDecoder

    /// Creates the codec.
    public init() {
        encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
    }

    /// The type name and JSON payload of `event`.
    public func encode<Event: DomainEvent>(_ event: Event) throws(EventStoreError) -> (eventType: String, payload: Data) {
        do {
            return (event.eventType, try encoder.encode(event))
        } catch {
            throw EventStoreError(.encodingFailed, "a \(event.eventType.debugDescription) event could not be encoded", underlying: error)
        }
    }

    /// `stored` decoded as `Event`, or `nil` when `Event` does not handle its type.
    ///
    /// - Throws: ``EventStoreError/Code/undecodableEvent`` naming the stream, version and position when the type is
    ///   handled but the payload does not decode.
    public func decode<Event: DomainEvent>(_ stored: StoredEvent, as type: Event.Type = Event.self) throws(EventStoreError) -> Event? {
        guard Event.handles(eventType: stored.eventType) else { return nil }
        do {
            return try decoder.decode(Event.self, from: stored.payload)
        } catch {
            throw EventStoreError(
                .undecodableEvent,
                "event \(stored.streamID)@\(stored.streamVersion) of type \(stored.eventType.debugDescription) does not decode as \(Event.self)",
                streamID: stored.streamID,
                globalPosition: stored.globalPosition,
                underlying: error
            )
        }
    }
}
