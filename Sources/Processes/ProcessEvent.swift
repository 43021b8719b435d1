import EventCore

/// The vocabulary of one kind of process stream: the shared lifecycle events plus the process's own events.
///
/// `Domain` is the process author's event type. Its ``DomainEvent/handles(eventType:)`` must name exactly its
/// own type names (the default, "every type", would claim the lifecycle events too). A domain event is stored
/// as `{"<its type name>": <its own encoding>}`.
public enum ProcessEvent<Domain: DomainEvent>: DomainEvent {
    /// A start, end, timeout or retry.
    case lifecycle(ProcessLifecycleEvent)
    /// One of the process's own events.
    case domain(Domain)

    /// The lifecycle event's or the domain event's type name.
    public var eventType: String {
        switch self {
        case .lifecycle(let event): event.eventType
        case .domain(let event): event.eventType
        }
    }

    /// The lifecycle names and whatever `Domain` handles.
    public static func handles(eventType: String) -> Bool {
        ProcessLifecycleEvent.handles(eventType: eventType) || Domain.handles(eventType: eventType)
    }

    /// Decodes the envelope: a lifecycle event by its name, anything else as `Domain`.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: EnvelopeKey.self)
        let key = try EnvelopeKey.single(in: container)
        if let lifecycle = try ProcessLifecycleEvent.decode(key: key, in: container) {
            self = .lifecycle(lifecycle)
        } else {
            self = .domain(try container.decode(Domain.self, forKey: key))
        }
    }

    /// Encodes the envelope.
    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .lifecycle(let event):
            try event.encode(to: encoder)
        case .domain(let event):
            var container = encoder.container(keyedBy: EnvelopeKey.self)
            try container.encode(event, forKey: EnvelopeKey(event.eventType))
        }
    }

    /// The lifecycle event, if this is one.
    public var lifecycleEvent: ProcessLifecycleEvent? {
        if case .lifecycle(let event) = self { return event }
        return nil
    }

    /// The domain event, if this is one.
    public var domainEvent: Domain? {
        if case .domain(let event) = self { return event }
        return nil
    }
}

extension ProcessEvent: Equatable where Domain: Equatable {}
extension ProcessEvent: Hashable where Domain: Hashable {}
