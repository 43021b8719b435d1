import EventCore
import Foundation

extension Envelope {
    /// The envelope that carries a stored event to other services: the event id as message id, the event's
    /// correlation, causation and trace context, and where it is stored.
    public init(stored event: StoredEvent) {
        self.init(
            messageID: event.id.description, eventType: event.eventType, correlationID: event.metadata.correlationID,
            causationID: event.metadata.causationID, traceparent: event.metadata.traceparent, body: event.payload,
            timestamp: event.recordedAt, streamID: event.streamID.description, streamVersion: Int64(event.streamVersion),
            globalPosition: Int64(event.globalPosition))
    }
}

extension Publication {
    /// A stored event published to the process events exchange with its type name as the routing key.
    public init(stored event: StoredEvent) {
        self.init(envelope: Envelope(stored: event), routingKey: event.eventType)
    }
}
