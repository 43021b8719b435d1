import AMQP
import ArgumentParser
import EventCore
import Fleet
import FleetSimulation
import Foundation

/// `fleet replay`: re-publish events, from the store or from the stream queue, with their original ids.
struct ReplayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Re-publish events from the event store or from the stream queue; message ids are kept, so consumers absorb repeats.",
        subcommands: [Store.self, Stream.self]
    )

    struct Store: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-publish stored events in global order, with confirms and a resumable checkpoint.",
            discussion: "Ctrl-C stops after the batch in flight; run again with the same --checkpoint to continue.")
        @OptionGroup var broker: BrokerOptions
        @OptionGroup var store: StoreOptions
        @Option(help: "From this global position on (inclusive).") var fromPosition: Int?
        @Option(help: "Only events recorded at or after this time (ISO 8601, or an age: 2h, 3d).") var since: String?
        @Option(help: "Only events recorded before this time.") var until: String?
        @Option(help: "Only the events of this stream.") var stream: String?
        @Option(help: "Only events of this type (repeatable).") var type: [String] = []
        @Option(help: "The exchange to publish to.") var to: String
        @Option(help: "The routing key; by default each event's type name.") var routingKey: String?
        @Option(help: "At most this many events per second (e.g. 500 or 500/s).") var rate: String?
        @Option(help: "Checkpoint file: created, updated after every confirmed batch, resumed from when it exists.") var checkpoint: String?
        @Flag(help: "Only count what would be published.") var dryRun = false
        @Flag(help: "Print the report as JSON.") var json = false

        func validate() throws {
            if fromPosition != nil && since != nil { throw ValidationError("give --from-position or --since, not both") }
            if fromPosition == nil && since == nil && stream == nil && type.isEmpty {
                throw ValidationError("say what to replay: --from-position N, --since TIME, --stream ID or --type T")
            }
        }

        func run() async throws {
            try await Operator.run {
                let selection = StoreReplaySelection(fromPosition: fromPosition, since: try since.map { try OperatorTime.parse($0) },
                                                     until: try until.map { try OperatorTime.parse($0) }, streamID: stream, eventTypes: type)
                try selection.validate()
                let replay = StoreReplay(selection: selection, target: ReplayTarget(exchange: to, routingKey: routingKey),
                                         ratePerSecond: try rate.map(Self.parseRate), checkpoint: checkpoint.map { URL(fileURLWithPath: $0) },
                                         dryRun: dryRun)
                let connection = try await broker.connect()
                let storeConnection: StoreConnection
                do {
                    storeConnection = try await store.open()
                } catch {
                    await connection.close()
                    throw error
                }
                let interrupt = InterruptSignal()
                do {
                    if !to.isEmpty {
                        var missing = false
                        do {
                            try await connection.declare(ExchangeDeclaration(name: to), passive: true)
                        } catch {
                            guard (error as? AMQPError)?.code == .notFound else { throw error }
                            missing = true
                        }
                        if missing { throw OperationsError(.notFound, "exchange \"\(to)\" does not exist on \(connection.configuration)") }
                    }
                    let (after, resumed) = try await replay.prepare(store: storeConnection.store)
                    if let resumed { FileHandle.standardError.write(Data("resuming after position \(resumed.lastConfirmedPosition) (\(resumed.published) events confirmed before)\n".utf8)) }
                    let total = try await replay.count(store: storeConnection.store, after: after)
                    let publisher = dryRun ? nil : try await connection.makePublisher(confirms: true)
                    let report = try await replay.run(store: storeConnection.store, publisher: publisher, shouldStop: { interrupt.isRequested }) { progress in
                        Operator.progress("\(Operator.bar(progress.published, of: total))\(progress.published)/\(total) events, position \(progress.lastPosition), \(Int(progress.rate))/s")
                    }
                    Operator.endProgress()
                    await publisher?.close()
                    interrupt.cancel()
                    await storeConnection.close()
                    await connection.close()
                    if json {
                        try Operator.printJSON(report)
                    } else {
                        let verb = dryRun ? "would publish" : "published"
                        print("\(verb) \(report.published) event(s) (\(selection)) to \(replay.target) in \(String(format: "%.1f", report.elapsedSeconds)) s; last position \(report.lastPosition.map(String.init) ?? "-")")
                        if report.stoppedEarly, let checkpoint { print("stopped early: run the same command again to continue from \(checkpoint)") }
                    }
                    if report.stoppedEarly { throw ExitCode(130) }
                } catch {
                    interrupt.cancel()
                    await storeConnection.close()
                    await connection.close()
                    throw error
                }
            }
        }

        static func parseRate(_ text: String) throws(OperationsError) -> Double {
            let number = text.hasSuffix("/s") ? String(text.dropLast(2)) : text
            guard let rate = Double(number), rate > 0 else {
                throw OperationsError(.invalidArgument, "--rate must be a number of events per second, like 500 or 500/s, not \"\(text)\"")
            }
            return rate
        }
    }

    struct Stream: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-read the stream queue into a processing queue, message ids kept.",
            discussion: "Stops at --limit, or once the stream's tail is reached (no message for --idle seconds), or on Ctrl-C.")
        @OptionGroup var broker: BrokerOptions
        @Option(help: "The stream queue.") var stream = "domain.events.stream"
        @Option(help: "Where to begin: first, last or an offset.") var offset: String?
        @Option(help: "Begin with the messages stored at or after this time (ISO 8601, or an age: 2h).") var since: String?
        @Option(help: "The processing queue to publish to.") var to: String
        @Option(help: "At most this many messages.") var limit: Int?
        @Option(help: "Seconds without a message after which the tail counts as reached.") var idle: Double = 3
        @Flag(help: "Only count what would be published.") var dryRun = false
        @Flag(help: "Print the report as JSON.") var json = false

        func validate() throws {
            if (offset == nil) == (since == nil) { throw ValidationError("give --offset first|last|N or --since TIME") }
        }

        func run() async throws {
            try await Operator.run {
                let start: StreamReplay.Offset
                if let since {
                    start = .since(try OperatorTime.parse(since))
                } else {
                    start = try StreamReplay.Offset(parsing: offset ?? "first")
                }
                guard idle > 0 else { throw OperationsError(.invalidArgument, "--idle must be more than 0 seconds") }
                let replay = StreamReplay(stream: stream, target: to, offset: start, limit: limit, dryRun: dryRun,
                                          idleTimeout: .milliseconds(Int(idle * 1000)))
                let connection = try await broker.connect()
                let interrupt = InterruptSignal()
                do {
                    let report = try await replay.run(connection: connection, shouldStop: { interrupt.isRequested }) { progress in
                        Operator.progress("\(progress.published) messages, offset \(progress.lastPosition), \(Int(progress.rate))/s")
                    }
                    Operator.endProgress()
                    interrupt.cancel()
                    await connection.close()
                    if json { return try Operator.printJSON(report) }
                    let verb = dryRun ? "would publish" : "published"
                    print("\(verb) \(report.published) message(s) from \(stream) (\(start)) to queue \(to); last offset \(report.lastPosition.map(String.init) ?? "-")")
                } catch {
                    interrupt.cancel()
                    await connection.close()
                    throw error
                }
            }
        }
    }
}
