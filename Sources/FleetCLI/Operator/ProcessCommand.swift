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

    /// The sagas of the example domain that `retry` can run on.
    static let retries = [ProcessInspection.SagaRetry(TravelBookingSaga.self)]

    /// Opens the store, runs `body` on its inspection, and closes the store, whether `body` succeeds or not.
    static func inspecting<T>(_ options: StoreOptions, _ body: (ProcessInspection) async throws -> T) async throws -> T {
        let connection = try await options.open()
        do {
            let value = try await body(ProcessInspection(store: connection.store, retries: retries))
            await connection.close()
            return value
        } catch {
            await connection.close()
            throw error
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List processes, oldest first.")
        @OptionGroup var store: StoreOptions
        @Option(help: "Only this state: \(ProcessInspection.stateNames.joined(separator: ", ")).") var state: String?
        @Option(help: "Only this process type (order-fulfillment, travel-booking).") var type: String?
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            try await Operator.run {
                let filter = try state.map { try ProcessInspection.stateFilter(parsing: $0) }
                let rows = try await ProcessCommand.inspecting(store) { try await $0.list(state: filter, processType: type) }
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

        func run() async throws {
            try await Operator.run {
                let detail = try await ProcessCommand.inspecting(store) { try await $0.show(id) }
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
                let report = try await ProcessCommand.inspecting(store) { try await $0.retry(id, by: by) }
                if json { return try Operator.printJSON(report) }
                print("retried \(id): saga phase \(report.phase), process \(report.state)")
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

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Pending timeouts of running processes, earliest first.")
        @OptionGroup var store: StoreOptions
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            try await Operator.run {
                let rows = try await ProcessCommand.inspecting(store) { try await $0.pendingTimeouts() }
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
        @Flag(help: "Print the cancelled timeout as JSON.") var json = false

        func run() async throws {
            try await Operator.run {
                let timeout = try await ProcessCommand.inspecting(store) { try await $0.cancelTimeout(id) }
                if json { return try Operator.printJSON(timeout) }
                print("cancelled timeout \(timeout.timeoutID) of process \(timeout.processID) (was due \(timeout.dueAt.formatted(.iso8601)))")
            }
        }
    }
}
