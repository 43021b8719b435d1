import ArgumentParser
import EventCore
import Fleet
import FleetSimulation
import Foundation
import OrderFulfillment
import Processes

/// `fleet process`: the processes in the store.
struct ProcessCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "process",
        abstract: "List processes, show one with its history and pending timeout, retry a saga that needs attention.",
        subcommands: [List.self, Show.self, Retry.self]
    )

    /// A process as the commands print it.
    struct Row: Encodable {
        var processID: String
        var processType: String
        var businessID: String
        var state: String
        var startedAt: Date
        var endedAt: Date?
        var retries: Int
        var pendingTimeout: PendingTimeout?

        init(_ summary: ProcessSummary) {
            processID = summary.processID.description
            processType = summary.processType
            businessID = summary.businessID
            state = summary.status.description
            startedAt = summary.startedAt
            endedAt = summary.endedAt
            retries = summary.retries
            pendingTimeout = summary.pendingTimeout.map { PendingTimeout(processID: summary.processID.description, timeoutID: $0.timeoutID, dueAt: $0.dueAt, attempt: $0.attempt) }
        }
    }

    /// A pending timeout as the commands print it.
    struct PendingTimeout: Encodable {
        var processID: String
        var timeoutID: String
        var dueAt: Date
        var attempt: Int
    }

    static func summary(of id: String, in store: any EventStore) async throws -> ProcessSummary {
        guard let summary = try await ProcessCatalog(store: store).processes().first(where: { $0.processID.description == id }) else {
            throw OperationsError(.notFound, "no process \"\(id)\" in the store (fleet process list shows them)")
        }
        return summary
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List processes, oldest first.")
        @OptionGroup var store: StoreOptions
        @Option(help: "Only this state: \(ProcessSummary.StatusFilter.allCases.map(\.rawValue).joined(separator: ", ")).") var state: String?
        @Option(help: "Only this process type (order-fulfillment, travel-booking).") var type: String?
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            try await Operator.run {
                let filter: ProcessSummary.StatusFilter? = try state.map { text in
                    guard let filter = ProcessSummary.StatusFilter(rawValue: text) else {
                        throw OperationsError(.invalidArgument, "unknown state \"\(text)\": use \(ProcessSummary.StatusFilter.allCases.map(\.rawValue).joined(separator: ", "))")
                    }
                    return filter
                }
                let connection = try await store.open()
                let rows: [Row]
                do {
                    rows = try await ProcessCatalog(store: connection.store).processes(status: filter, processType: type).map(Row.init)
                } catch {
                    await connection.close()
                    throw error
                }
                await connection.close()
                if json { return try Operator.printJSON(rows) }
                print("\(rows.count) process(es)")
                for row in rows {
                    print("\(row.processID)  \(row.processType)  \(row.businessID)  \(row.state)  started \(row.startedAt.formatted(.iso8601))\(row.pendingTimeout.map { "  timeout due \($0.dueAt.formatted(.iso8601))" } ?? "")")
                }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a process: state, current step, history as a timeline, pending timeout.")
        @OptionGroup var store: StoreOptions
        @Argument(help: "The process id (its stream id).") var id: String
        @Flag(help: "Print JSON.") var json = false

        struct Detail: Encodable {
            var process: Row
            var step: String?
            var history: [Entry]
        }

        struct Entry: Encodable {
            var version: Int
            var eventType: String
            var recordedAt: Date
            var payload: String
        }

        func run() async throws {
            try await Operator.run {
                let connection = try await store.open()
                let detail: Detail
                do {
                    let summary = try await ProcessCommand.summary(of: id, in: connection.store)
                    let history = try await ProcessCatalog(store: connection.store).history(of: summary.processID)
                    // The step is the last step-bearing event: its type names where the process stands.
                    let step = history.last(where: { !["TimeoutScheduled", "TimeoutCancelled", "ProcessStarted"].contains($0.eventType) })?.eventType
                    detail = Detail(process: Row(summary), step: step,
                                    history: history.map { Entry(version: $0.version, eventType: $0.eventType, recordedAt: $0.recordedAt, payload: $0.payload) })
                } catch {
                    await connection.close()
                    throw error
                }
                await connection.close()
                if json { return try Operator.printJSON(detail) }
                let row = detail.process
                print("""
                process:   \(row.processID)
                type:      \(row.processType) (business id \(row.businessID))
                state:     \(row.state)
                step:      \(detail.step ?? "-")
                started:   \(row.startedAt.formatted(.iso8601))\(row.endedAt.map { ", ended \($0.formatted(.iso8601))" } ?? "")
                retries:   \(row.retries)
                timeout:   \(row.pendingTimeout.map { "\($0.timeoutID) due \($0.dueAt.formatted(.iso8601)) (attempt \($0.attempt))" } ?? "none pending")
                history:
                """)
                let start = row.startedAt
                for entry in detail.history {
                    let offset = entry.recordedAt.timeIntervalSince(start)
                    print(String(format: "  %4ld  +%9.3fs  ", entry.version, offset) + "\(entry.eventType)  \(entry.payload.prefix(160))")
                }
            }
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Retry the compensation of a saga that needs attention (after fixing its cause), and run it on.")
        @OptionGroup var store: StoreOptions
        @Argument(help: "The process id.") var id: String
        @Option(help: "Who retries it, recorded in the saga.") var by = ProcessInfo.processInfo.environment["USER"] ?? "operator"
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            try await Operator.run {
                let connection = try await store.open()
                do {
                    let summary = try await ProcessCommand.summary(of: id, in: connection.store)
                    guard case .needsAttention = summary.status else {
                        throw OperationsError(.notApplicable, "process \(id) is \(summary.status): only a saga that needs attention can be retried")
                    }
                    guard summary.processType == TravelBookingSaga.sagaType else {
                        throw OperationsError(.notApplicable, "no saga definition for process type \(summary.processType)")
                    }
                    let runner = SagaRunner(runtime: ProcessRuntime(executor: CommandExecutor(store: connection.store)))
                    let report = try await runner.retryCompensation(TravelBookingSaga.self, businessID: summary.businessID, by: by)
                    let after = try await ProcessCommand.summary(of: id, in: connection.store)
                    await connection.close()
                    if json { return try Operator.printJSON(["process": id, "phase": "\(report.phase)", "state": after.status.description]) }
                    print("retried \(id): saga phase \(report.phase), process \(after.status)")
                } catch {
                    await connection.close()
                    throw error
                }
            }
        }
    }
}

/// `fleet timeouts`: the pending process timeouts.
struct TimeoutsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "timeouts",
        abstract: "List pending process timeouts, or cancel one.",
        subcommands: [List.self, Cancel.self]
    )

    static func pending(in store: any EventStore) async throws -> [ScheduledTimeout] {
        try await StoreTimeoutScheduler(runtime: ProcessRuntime(executor: CommandExecutor(store: store)), clock: SystemProcessClock()).pending()
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Pending timeouts of running processes, earliest first.")
        @OptionGroup var store: StoreOptions
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            try await Operator.run {
                let connection = try await store.open()
                let timeouts: [ScheduledTimeout]
                do { timeouts = try await TimeoutsCommand.pending(in: connection.store) } catch {
                    await connection.close()
                    throw error
                }
                await connection.close()
                let rows = timeouts.map { ProcessCommand.PendingTimeout(processID: $0.processID.description, timeoutID: $0.timeoutID, dueAt: $0.dueAt, attempt: $0.attempt) }
                if json { return try Operator.printJSON(rows) }
                print("\(rows.count) pending timeout(s)")
                for row in rows { print("\(row.timeoutID)  process \(row.processID)  due \(row.dueAt.formatted(.iso8601))  attempt \(row.attempt)") }
            }
        }
    }

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Cancel a pending timeout, named by its timeout id or its process id.")
        @OptionGroup var store: StoreOptions
        @Argument(help: "The timeout id or the process id.") var id: String

        func run() async throws {
            try await Operator.run {
                let connection = try await store.open()
                do {
                    let runtime = ProcessRuntime(executor: CommandExecutor(store: connection.store))
                    let scheduler = StoreTimeoutScheduler(runtime: runtime, clock: SystemProcessClock())
                    guard let timeout = try await scheduler.pending().first(where: { $0.timeoutID == id || $0.processID.description == id }) else {
                        throw OperationsError(.notFound, "no pending timeout \"\(id)\" (fleet timeouts list shows them)")
                    }
                    try await scheduler.cancel(CancelledTimeout(processID: timeout.processID, timeoutID: timeout.timeoutID))
                    await connection.close()
                    print("cancelled timeout \(timeout.timeoutID) of process \(timeout.processID) (was due \(timeout.dueAt.formatted(.iso8601)))")
                } catch {
                    await connection.close()
                    throw error
                }
            }
        }
    }
}
