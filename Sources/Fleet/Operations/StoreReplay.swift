import AMQP
import EventCore
import Foundation

/// Which stored events a replay re-publishes.
public struct StoreReplaySelection: Sendable, Hashable, Codable, CustomStringConvertible {
    /// From this global position on (inclusive).
    public var fromPosition: Int?
    /// Only events recorded at or after this time.
    public var since: Date?
    /// Only events recorded before this time.
    public var until: Date?
    /// Only the events of this stream.
    public var streamID: String?
    /// Only these event types; empty means every type.
    public var eventTypes: [String]

    /// A selection; with nothing set, the whole store.
    public init(fromPosition: Int? = nil, since: Date? = nil, until: Date? = nil, streamID: String? = nil, eventTypes: [String] = []) {
        self.fromPosition = fromPosition
        self.since = since
        self.until = until
        self.streamID = streamID
        self.eventTypes = eventTypes
    }

    /// Checks the selection on its own: positions from 1, a time range that is not empty.
    public func validate() throws(OperationsError) {
        if let fromPosition, fromPosition < 1 { throw OperationsError(.invalidArgument, "--from-position must be at least 1") }
        if let since, let until, since >= until {
            throw OperationsError(.invalidArgument, "--since (\(since.formatted(.iso8601))) must be before --until (\(until.formatted(.iso8601)))")
        }
    }

    /// Whether `event` is selected (the position aside).
    public func matches(_ event: StoredEvent) -> Bool {
        if let streamID, event.streamID.description != streamID { return false }
        if !eventTypes.isEmpty && !eventTypes.contains(event.eventType) { return false }
        if let since, event.recordedAt < since { return false }
        if let until, event.recordedAt >= until { return false }
        return true
    }

    /// `from position 5, type A|B, ...`.
    public var description: String {
        var parts: [String] = []
        if let fromPosition { parts.append("from position \(fromPosition)") }
        if let since { parts.append("since \(since.formatted(.iso8601))") }
        if let until { parts.append("until \(until.formatted(.iso8601))") }
        if let streamID { parts.append("stream \(streamID)") }
        if !eventTypes.isEmpty { parts.append("type \(eventTypes.joined(separator: "|"))") }
        return parts.isEmpty ? "every event" : parts.joined(separator: ", ")
    }
}

/// Where replayed events go: an exchange, with a fixed routing key or each event's type name.
public struct ReplayTarget: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The exchange; empty for the default exchange.
    public var exchange: String
    /// The routing key; nil routes each event by its type name.
    public var routingKey: String?

    /// A target.
    public init(exchange: String, routingKey: String? = nil) {
        self.exchange = exchange
        self.routingKey = routingKey
    }

    /// `exchange "x" (routing key "k")`.
    public var description: String {
        "exchange \"\(exchange)\" (routing key \(routingKey.map { "\"\($0)\"" } ?? "= event type"))"
    }
}

/// How far a replay has come.
public struct ReplayProgress: Sendable, Hashable, Codable {
    /// Events confirmed (or, in a dry run, counted) in this run.
    public var published: Int
    /// Global position of the last confirmed event; the store replay's checkpoint.
    public var lastPosition: Int
    /// Seconds since the run started.
    public var elapsedSeconds: Double

    /// Events per second so far.
    public var rate: Double { elapsedSeconds > 0 ? Double(published) / elapsedSeconds : 0 }
}

/// What a replay run did.
public struct ReplayReport: Sendable, Hashable, Codable {
    /// Events confirmed by the broker (in a dry run: selected) in this run.
    public var published: Int
    /// Where the run began: the checkpoint position it resumed after, if any.
    public var resumedAfter: Int?
    /// Global position (store) or offset (stream) of the last confirmed message.
    public var lastPosition: Int?
    /// Whether the run stopped before the end of its selection (an interruption or a limit).
    public var stoppedEarly: Bool
    /// Whether nothing was published.
    public var dryRun: Bool
    /// How long it took, in seconds.
    public var elapsedSeconds: Double
}

/// Re-publishes stored events as the fleet publishes them (``Envelope/init(stored:)``: the event id as message
/// id), with publisher confirms, an optional rate limit and a checkpoint file.
///
/// Events go out in global order, a batch at a time; after every confirmed batch the checkpoint is rewritten
/// with the last position, so a run stopped at any point (``run(store:publisher:shouldStop:progress:)``'s
/// `shouldStop`, task cancellation, SIGINT in the CLI) continues after the last confirmed event: no gap, and no
/// confirmed event twice. An event whose confirm did not come may go out twice; its message id lets consumers
/// drop the copy.
public struct StoreReplay: Sendable {
    /// Which events.
    public var selection: StoreReplaySelection
    /// Where to.
    public var target: ReplayTarget
    /// At most this many events per second; nil for as fast as the broker confirms.
    public var ratePerSecond: Double?
    /// Events per batch (and between checkpoints).
    public var batchSize: Int
    /// The checkpoint file; nil for none.
    public var checkpoint: URL?
    /// Only count what would be published.
    public var dryRun: Bool

    /// A replay.
    public init(selection: StoreReplaySelection, target: ReplayTarget, ratePerSecond: Double? = nil, batchSize: Int = 250,
                checkpoint: URL? = nil, dryRun: Bool = false) {
        self.selection = selection
        self.target = target
        self.ratePerSecond = ratePerSecond
        self.batchSize = batchSize
        self.checkpoint = checkpoint
        self.dryRun = dryRun
    }

    /// Checks everything that can be checked before publishing: the selection, the rate, the checkpoint file
    /// (it must belong to this selection and target), a start position inside the store. Returns the global
    /// position the run continues after.
    public func prepare(store: any EventStore) async throws -> (after: Int, resumed: ReplayCheckpoint?) {
        try selection.validate()
        if let ratePerSecond, !(ratePerSecond > 0) { throw OperationsError(.invalidArgument, "--rate must be more than 0 events per second") }
        guard batchSize >= 1 else { throw OperationsError(.invalidArgument, "the batch size must be at least 1") }
        var after = max((selection.fromPosition ?? 1) - 1, 0)
        if let fromPosition = selection.fromPosition, fromPosition > 1 {
            let next = try await store.readAll(after: fromPosition - 1, limit: 1)
            if next.isEmpty {
                var last = 0
                while let page = try await store.readAll(after: last, limit: 5000).last { last = page.globalPosition }
                throw OperationsError(.positionPastEnd, "position \(fromPosition) is past the end of the store (its last event is at position \(last))")
            }
        }
        var resumed: ReplayCheckpoint?
        if let checkpoint, let saved = try ReplayCheckpoint.load(from: checkpoint) {
            guard saved.selection == selection, saved.target == target else {
                throw OperationsError(.checkpointMismatch, "\(checkpoint.path) belongs to another replay (\(saved.selection), to \(saved.target)); use another file or delete it")
            }
            after = max(after, saved.lastConfirmedPosition)
            resumed = saved
        }
        return (after, resumed)
    }

    /// The number of events the replay would publish after global position `after`.
    public func count(store: any EventStore, after: Int) async throws -> Int {
        var reader = SelectionReader(selection: selection, pageSize: 1000)
        var position = after, total = 0
        while let page = try await reader.page(store: store, after: position), let last = page.last {
            total += page.count
            position = last.globalPosition
        }
        return total
    }

    /// Runs the replay: publishes every selected event after the prepared position on `publisher` (nil only
    /// in a dry run), and returns when the selection is exhausted, `shouldStop` returns true, or the task is
    /// cancelled (after the batch in flight is confirmed and checkpointed).
    /// - Throws: ``OperationsError/Code/publishFailed`` when the broker refuses an event; the checkpoint then
    ///   holds the last event before it.
    public func run(store: any EventStore, publisher: AMQPPublisher?, shouldStop: @Sendable () -> Bool = { false },
                    progress: @Sendable (ReplayProgress) -> Void = { _ in }) async throws -> ReplayReport {
        let (after, resumed) = try await prepare(store: store)
        guard dryRun || publisher != nil else { throw OperationsError(.invalidArgument, "a replay that publishes needs a publisher") }
        let clock = ContinuousClock(), start = clock.now
        var reader = SelectionReader(selection: selection, pageSize: ratePerSecond.map { max(1, min(batchSize, Int($0))) } ?? batchSize)
        var position = after, published = 0, total = resumed?.published ?? 0, stoppedEarly = false
        func elapsed() -> Double { (clock.now - start).seconds }
        while true {
            if shouldStop() || Task.isCancelled {
                stoppedEarly = true
                break
            }
            guard let page = try await reader.page(store: store, after: position), let last = page.last else { break }
            if let publisher, !dryRun {
                let messages = page.map { event in
                    let envelope = Envelope(stored: event)
                    return AMQPMessage(body: event.payload, exchange: target.exchange, routingKey: target.routingKey ?? event.eventType,
                                       properties: envelope.properties)
                }
                let results = await publisher.publish(contentsOf: messages)
                if let failed = results.firstIndex(where: { if case .failure = $0 { true } else { false } }) {
                    published += failed
                    total += failed
                    if failed > 0 { position = page[failed - 1].globalPosition }
                    try saveCheckpoint(position: position, published: total, finished: false)
                    guard case .failure(let error) = results[failed] else { break }
                    throw OperationsError(.publishFailed, "the broker did not confirm event \(page[failed].id) at position \(page[failed].globalPosition): \(error); \(published) events were confirmed, the checkpoint is at position \(position)")
                }
            }
            published += page.count
            total += page.count
            position = last.globalPosition
            if !dryRun { try saveCheckpoint(position: position, published: total, finished: false) }
            progress(ReplayProgress(published: published, lastPosition: position, elapsedSeconds: elapsed()))
            if let ratePerSecond {
                let due = Double(published) / ratePerSecond - elapsed()
                if due > 0 { try? await Task.sleep(for: .seconds(due)) }
            }
        }
        if !dryRun && !stoppedEarly { try saveCheckpoint(position: position, published: total, finished: true) }
        return ReplayReport(published: published, resumedAfter: resumed?.lastConfirmedPosition, lastPosition: position,
                            stoppedEarly: stoppedEarly, dryRun: dryRun, elapsedSeconds: elapsed())
    }

    private func saveCheckpoint(position: Int, published: Int, finished: Bool) throws {
        guard let checkpoint else { return }
        try ReplayCheckpoint(selection: selection, target: target, lastConfirmedPosition: position, published: published, finished: finished)
            .write(to: checkpoint)
    }
}

/// Reads the selected events page by page in global order, with the cheapest query the selection allows.
struct SelectionReader {
    let selection: StoreReplaySelection
    let pageSize: Int
    private var streamEvents: [StoredEvent]?

    init(selection: StoreReplaySelection, pageSize: Int) {
        self.selection = selection
        self.pageSize = pageSize
    }

    /// The next page after `position`, or nil when there is none.
    mutating func page(store: any EventStore, after position: Int) async throws -> [StoredEvent]? {
        let page: [StoredEvent]
        if let streamID = selection.streamID {
            if streamEvents == nil {
                let stream: StreamID
                do { stream = try StreamID(streamID) } catch { throw OperationsError(.invalidArgument, "\"\(streamID)\" is not a stream id: \(error)") }
                streamEvents = try await store.read(stream: stream).events
            }
            let selection = self.selection
            page = Array((streamEvents ?? []).filter { $0.globalPosition > position && selection.matches($0) }.prefix(pageSize))
        } else if !selection.eventTypes.isEmpty || selection.since != nil || selection.until != nil {
            page = try await store.events(matching: EventQuery(eventTypes: selection.eventTypes, recordedFrom: selection.since,
                                                               recordedBefore: selection.until, afterPosition: position, limit: pageSize))
        } else {
            page = try await store.readAll(after: position, limit: pageSize)
        }
        return page.isEmpty ? nil : page
    }
}
