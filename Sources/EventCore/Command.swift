import Foundation
import Synchronization

/// A decision over several event streams, the EventCore way.
///
/// The executor reads every stream in ``readStreams`` (plus any the command discovers through
/// ``CommandContext/resolver``), folds their events in global order into ``State`` with ``apply(_:_:)``, calls
/// ``handle(_:context:)`` for the events to write, and appends them atomically. The append expects every
/// stream read to still have the version that was read, including streams the command only read, so a
/// decision is never made on stale state. On a conflict the whole cycle runs again.
///
/// `apply` and `handle` must be pure: they may run several times for one execution.
public protocol Command: Sendable {
    /// What the command knows after folding its streams.
    associatedtype State: Sendable
    /// The events the command folds and writes.
    associatedtype Event: DomainEvent

    /// The streams the command reads and may write; the order is kept, duplicates are ignored.
    var readStreams: [StreamID] { get }

    /// The state before any event is folded.
    var initialState: State { get }

    /// Folds one event into the state.
    func apply(_ state: inout State, _ event: Event)

    /// Folds one event with its stored record (stream, version, recorded-at time, metadata). The default
    /// calls ``apply(_:_:)``; implement it instead when the fold needs the record.
    func apply(_ state: inout State, _ event: Event, recorded: StoredEvent)

    /// Decides what to write. Build each write with ``CommandContext/write(_:to:metadata:)``; ask
    /// ``CommandContext/resolver`` for more streams to have them read and folded before deciding again.
    /// Returning no write is a valid decision ("nothing to do"). Errors thrown here end the execution unchanged.
    func handle(_ state: State, context: CommandContext) throws -> [StreamWrite<Event>]
}

extension Command {
    /// Calls ``apply(_:_:)``.
    public func apply(_ state: inout State, _ event: Event, recorded: StoredEvent) {
        apply(&state, event)
    }
}

/// Collects the streams a command discovers while deciding. Adding a stream that was not read yet makes the
/// executor read it, fold again and call `handle` again; the writes of the round that discovered it are dropped.
public final class StreamResolver: Sendable {
    private let requested: Mutex<[StreamID]>

    /// Creates an empty resolver.
    public init() {
        requested = Mutex([])
    }

    /// Asks for `streams` to be read (streams already read or requested are ignored).
    public func add(_ streams: StreamID...) {
        add(contentsOf: streams)
    }

    /// Asks for `streams` to be read (streams already read or requested are ignored).
    public func add(contentsOf streams: some Sequence<StreamID>) {
        requested.withLock { list in
            for stream in streams where !list.contains(stream) { list.append(stream) }
        }
    }

    /// The streams asked for so far, in the order they were first asked for.
    public var requestedStreams: [StreamID] { requested.withLock { $0 } }
}

/// What `handle` knows besides the state: the streams it may write and where to ask for more.
public struct CommandContext: Sendable {
    /// The streams read and folded for this decision: declared ones first, then discovered ones.
    public let streams: [StreamID]
    /// The version of each stream read, as folded.
    public let versions: [StreamID: Int]
    /// Where to ask for streams the command did not declare.
    public let resolver: StreamResolver
    /// 1 for the first attempt, 2 after the first conflict, and so on.
    public let attempt: Int

    /// Creates a context; the executor and test harnesses do this.
    public init(streams: [StreamID], versions: [StreamID: Int], resolver: StreamResolver = StreamResolver(), attempt: Int = 1) {
        self.streams = streams
        self.versions = versions
        self.resolver = resolver
        self.attempt = attempt
    }

    /// Whether the command may write `stream` now: it was read, or it was asked for in this round.
    public func canWrite(_ stream: StreamID) -> Bool {
        streams.contains(stream) || resolver.requestedStreams.contains(stream)
    }

    /// A write of `event` to `stream`.
    ///
    /// - Throws: ``EventStoreError/Code/undeclaredStream`` if the command neither declared nor discovered `stream`.
    public func write<Event: DomainEvent>(_ event: Event, to stream: StreamID, metadata: EventMetadata? = nil) throws(EventStoreError) -> StreamWrite<Event> {
        guard canWrite(stream) else {
            throw EventStoreError(
                .undeclaredStream,
                "the command wrote to a stream it neither declared nor discovered",
                streamID: stream
            )
        }
        return StreamWrite(streamID: stream, event: event, metadata: metadata)
    }
}

/// One event bound for one stream the command may write. Made only by ``CommandContext/write(_:to:metadata:)``.
public struct StreamWrite<Event: DomainEvent>: Sendable {
    /// The stream.
    public let streamID: StreamID
    /// The event.
    public let event: Event
    /// Metadata fields that override the execution's metadata for this event.
    public let metadata: EventMetadata?

    init(streamID: StreamID, event: Event, metadata: EventMetadata?) {
        self.streamID = streamID
        self.event = event
        self.metadata = metadata
    }
}
