import AMQP
import ArgumentParser
import EventCore
import Fleet
import FleetSimulation
import Foundation
import Logging
import Synchronization

/// Where the operator commands find the broker.
struct BrokerOptions: ParsableArguments {
    @Option(name: .customLong("amqp-url"), help: "Broker URL (FLEET_AMQP_URL).")
    var amqpURL: String = ProcessInfo.processInfo.environment["FLEET_AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:5672/"

    /// Connects, or fails with a message that says which broker could not be reached (never the password).
    func connect() async throws -> AMQPConnection {
        let configuration: AMQPConfiguration
        do {
            configuration = try AMQPConfiguration(url: amqpURL)
        } catch {
            throw OperationsError(.invalidArgument, "bad broker URL: \(error)")
        }
        var once = configuration
        once.recovery = nil
        once.connectTimeout = .seconds(5)
        do {
            return try await AMQPConnection.connect(once, logger: Operator.quietLogger)
        } catch {
            throw OperationsError(.unreachable, "cannot reach the broker at \(configuration): \(error)")
        }
    }
}

/// Where the operator commands find the event store.
struct StoreOptions: ParsableArguments {
    @Option(name: .customLong("store"), help: "Event store: SQLite path or postgres:// URL (FLEET_STORE_URL).")
    var storeURL: String = ProcessInfo.processInfo.environment["FLEET_STORE_URL"] ?? "fleet.sqlite"

    /// Opens the store; a SQLite file must exist already (an operator command never creates an empty store).
    func open() async throws -> StoreConnection {
        let isPostgres = storeURL.hasPrefix("postgres://") || storeURL.hasPrefix("postgresql://")
        if !isPostgres {
            let path = storeURL.hasPrefix("sqlite://") ? String(storeURL.dropFirst("sqlite://".count)) : storeURL
            guard FileManager.default.fileExists(atPath: path) else {
                throw OperationsError(.notFound, "no event store at \(path)")
            }
        }
        let opening = StoreOpening()
        let storeURL = self.storeURL
        // A PostgreSQL server that does not answer keeps the connection pool retrying for a minute; an operator
        // command gives up sooner and says so (a store that opens too late is closed again).
        let opened: Result<StoreConnection, any Error>? = await withCheckedContinuation { continuation in
            opening.waiting(continuation)
            Task {
                do {
                    let connection = try await StoreConnection.open(storeURL, maximumPayloadBytes: 1 << 24, logger: Operator.quietLogger)
                    if !opening.finish(.success(connection)) { await connection.close() }
                } catch {
                    opening.finish(.failure(error))
                }
            }
            Task {
                try? await Task.sleep(for: Self.openTimeout)
                opening.finish(nil)
            }
        }
        switch opened {
        case .success(let connection)?:
            return connection
        case .failure(let error)?:
            throw OperationsError(.unreachable, "cannot open the event store: \(error)")
        case nil:
            throw OperationsError(.unreachable, "cannot open the event store: no answer within \(Self.openTimeout.components.seconds) s")
        }
    }

    /// How long a command waits for the store to open.
    static let openTimeout: Duration = .seconds(15)
}

/// The outcome of opening a store, delivered once: the store's answer or the deadline, whichever comes first.
private final class StoreOpening: Sendable {
    private let continuation = Mutex<CheckedContinuation<Result<StoreConnection, any Error>?, Never>?>(nil)

    func waiting(_ continuation: CheckedContinuation<Result<StoreConnection, any Error>?, Never>) {
        self.continuation.withLock { $0 = continuation }
    }

    /// Resumes the waiting command with `outcome`; false when it was resumed already.
    @discardableResult
    func finish(_ outcome: Result<StoreConnection, any Error>?) -> Bool {
        guard let continuation = self.continuation.withLock({ $0.take() }) else { return false }
        continuation.resume(returning: outcome)
        return true
    }
}

/// What every operator command shares: error reporting, JSON output, SIGINT handling.
enum Operator {
    /// Libraries log only warnings and worse in an operator command, so its own output stays readable.
    static var quietLogger: Logger {
        var logger = Logger(label: "fleet.operator")
        logger.logLevel = .warning
        return logger
    }

    /// Runs `body`; an error becomes `error: <message>` on standard error and exit status 1.
    static func run(_ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let exit as ExitCode {
            throw exit
        } catch let error as ValidationError {
            throw error
        } catch let error as CleanExit {
            throw error
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }

    /// Prints `value` as pretty JSON on standard output.
    static func printJSON<T: Encodable>(_ value: T) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        print(String(decoding: try encoder.encode(value), as: UTF8.self))
    }

    /// Writes a progress line on standard error when it is a terminal.
    static func progress(_ text: String) {
        guard isatty(STDERR_FILENO) == 1 else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[2K\(text)".utf8))
    }

    /// Ends the progress line.
    static func endProgress() {
        guard isatty(STDERR_FILENO) == 1 else { return }
        FileHandle.standardError.write(Data("\n".utf8))
    }

    /// A bar of `width` characters for `done` of `total`.
    static func bar(_ done: Int, of total: Int, width: Int = 30) -> String {
        guard total > 0 else { return "" }
        let filled = min(width, width * done / total)
        return "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled) + "] "
    }
}

/// The first SIGINT (Ctrl-C) asks a long command to stop after the work in flight; a second one ends the
/// process at once.
final class InterruptSignal: Sendable {
    private final class Flag: Sendable {
        let value = Mutex(false)
    }

    private let requested = Flag()
    /// Set once in `init`; Dispatch synchronizes its own state, `cancel()` is its only other use.
    nonisolated(unsafe) private let source: any DispatchSourceSignal

    init() {
        signal(SIGINT, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        self.source = source
        let requested = self.requested
        source.setEventHandler {
            let again = requested.value.withLock { flag in
                defer { flag = true }
                return flag
            }
            if again { exit(130) }
            FileHandle.standardError.write(Data("\ninterrupted: finishing the batch in flight, then stopping (Ctrl-C again to quit now)\n".utf8))
        }
        source.resume()
    }

    /// Whether a stop was asked for.
    var isRequested: Bool { requested.value.withLock { $0 } }

    /// Restores the default SIGINT handling.
    func cancel() {
        source.cancel()
        signal(SIGINT, SIG_DFL)
    }
}
