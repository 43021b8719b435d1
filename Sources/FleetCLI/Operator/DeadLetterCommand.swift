import AMQP
import ArgumentParser
import Fleet
import Foundation

/// `fleet dlq`: the dead-letter queue.
struct DeadLetterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq",
        abstract: "Inspect the dead-letter queue, send dead letters back to work, or empty it.",
        discussion: "Reading never removes a dead letter: messages are taken and given back.",
        subcommands: [List.self, Show.self, Requeue.self, Purge.self]
    )

    struct Target: ParsableArguments {
        @OptionGroup var broker: BrokerOptions
        @Option(help: "The dead-letter queue.") var queue = "fleet.dead-letters"
        @Flag(help: "Print JSON.") var json = false
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List dead letters: id, type, reason, source queue.")
        @OptionGroup var target: Target
        @Option(help: "At most this many.") var limit = 1000
        @Option(help: "Only these: type=T,reason=R,queue=Q (all must hold).") var filter: String?

        func run() async throws {
            try await Operator.run {
                let filter = try DeadLetterFilter(parsing: filter ?? "")
                let connection = try await target.broker.connect()
                let letters: [DeadLetter]
                do {
                    letters = try await DeadLetterQueue(connection: connection, queue: target.queue).list(limit: limit, filter: filter)
                } catch {
                    await connection.close()
                    throw error
                }
                await connection.close()
                if target.json { return try Operator.printJSON(letters) }
                print("\(letters.count) dead letter(s) in \(target.queue)")
                for letter in letters {
                    print("\(letter.messageID)  \(letter.eventType ?? "-")  \(letter.reason)  from \(letter.sourceQueue ?? "?")  at \(letter.failedAt ?? "?")")
                }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one dead letter, body and headers included.")
        @OptionGroup var target: Target
        @Argument(help: "The message id.") var id: String

        func run() async throws {
            try await Operator.run {
                let connection = try await target.broker.connect()
                let letter: DeadLetter
                do {
                    letter = try await DeadLetterQueue(connection: connection, queue: target.queue).show(messageID: id)
                } catch {
                    await connection.close()
                    throw error
                }
                await connection.close()
                if target.json { return try Operator.printJSON(letter) }
                print("""
                message id:   \(letter.messageID)
                type:         \(letter.eventType ?? "-")
                correlation:  \(letter.correlationID ?? "-")
                reason:       \(letter.reason)
                detail:       \(letter.detail ?? "-")
                source queue: \(letter.sourceQueue ?? "-") (routing key \(letter.sourceRoutingKey ?? "-"))
                worker:       \(letter.worker ?? "-")
                failed at:    \(letter.failedAt ?? "-")
                body (\(letter.bodyBytes) bytes):
                \(letter.body)
                """)
            }
        }
    }

    struct Requeue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send dead letters back to their source queue (or --to), without x-death and the failure headers.",
            discussion: "Each dead letter is removed only after the broker confirmed its copy. Fix the cause first.")
        @OptionGroup var target: Target
        @Option(help: "Only these: type=T,reason=R,queue=Q (all must hold).") var filter: String?
        @Option(help: "Send them to this queue instead of their source queue.") var to: String?
        @Option(help: "At most this many.") var limit: Int?
        @Flag(help: "Only report what would be requeued.") var dryRun = false

        func run() async throws {
            try await Operator.run {
                let request = DeadLetterRequeueRequest(filter: try DeadLetterFilter(parsing: filter ?? ""), target: to, dryRun: dryRun, limit: limit)
                let connection = try await target.broker.connect()
                let report: DeadLetterRequeueReport
                do {
                    report = try await DeadLetterQueue(connection: connection, queue: target.queue).requeue(request) { report in
                        Operator.progress("\(Operator.bar(report.examined, of: report.total))\(report.examined)/\(report.total) examined, \(report.requeuedCount) requeued")
                    }
                } catch {
                    await connection.close()
                    throw error
                }
                Operator.endProgress()
                await connection.close()
                if target.json {
                    try Operator.printJSON(report)
                } else {
                    let verb = dryRun ? "would requeue" : "requeued"
                    print("\(verb) \(report.requeuedCount) of \(report.total) dead letter(s) (filter: \(request.filter))")
                    for (queue, count) in report.requeued.sorted(by: { $0.key < $1.key }) { print("  \(queue): \(count)") }
                    if report.withoutSource > 0 { print("  \(report.withoutSource) selected without a source queue: left in place (use --to)") }
                    for failure in report.failures { print("  failed \(failure.messageID) -> \(failure.target): \(failure.error)") }
                }
                if !report.failures.isEmpty { throw ExitCode(1) }
            }
        }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete every dead letter (asks for --yes).")
        @OptionGroup var target: Target
        @Flag(help: "Really delete them.") var yes = false

        func run() async throws {
            try await Operator.run {
                let connection = try await target.broker.connect()
                let queue = DeadLetterQueue(connection: connection, queue: target.queue)
                do {
                    guard yes else {
                        let count = try await queue.count()
                        await connection.close()
                        throw OperationsError(.invalidArgument, "this deletes \(count) dead letter(s) from \(target.queue) for good: run again with --yes")
                    }
                    let removed = try await queue.purge()
                    await connection.close()
                    if target.json { return try Operator.printJSON(["purged": removed]) }
                    print("purged \(removed) dead letter(s) from \(target.queue)")
                } catch {
                    await connection.close()
                    throw error
                }
            }
        }
    }
}
