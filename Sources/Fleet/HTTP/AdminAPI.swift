import AMQP
import EventCore
import Foundation
import Logging

/// The worker's admin API: the operator commands (`fleet dlq`, `fleet process`, `fleet timeouts`,
/// `fleet topology diff`) over HTTP, JSON in and out, under `/admin`.
///
/// It exists only when a token is configured (`FLEET_ADMIN_TOKEN`, `FLEET_ADMIN_TOKEN_FILE` or
/// `--admin-token-file`); every request must carry `Authorization: Bearer <token>` (compared in constant
/// time), or gets 401. The token appears in no log line, error or metric.
///
/// Routes (`{id}` is one path segment, percent-encoded: a `/` in an id is sent as `%2F`):
///
/// | Method and path | Does | Answers |
/// |---|---|---|
/// | `GET /admin/dead-letters?limit=N&filter=F&queue=Q` | lists dead letters (`limit` 100 by default, `filter` as `type=T,reason=R,queue=Q`) | `{"queue", "deadLetters": [...]}` |
/// | `GET /admin/dead-letters/{messageID}?queue=Q` | one dead letter, body and headers | a dead letter |
/// | `POST /admin/dead-letters/requeue?queue=Q` | body `{"filter", "to", "limit", "dryRun"}` (all optional) | the requeue report |
/// | `DELETE /admin/dead-letters?queue=Q&confirm=yes` | empties the dead-letter queue | `{"queue", "purged": N}` |
/// | `GET /admin/processes?state=S&type=T` | lists processes, oldest first | `{"processes": [...]}` |
/// | `GET /admin/processes/{id}` | a process with its step, timeline and pending timeout | a process detail |
/// | `POST /admin/processes/{id}/retry` | body `{"by": "name"}` (optional): resumes a saga that needs attention | `{"process", "phase", "state"}` |
/// | `GET /admin/timeouts` | pending timeouts, earliest first | `{"timeouts": [...]}` |
/// | `DELETE /admin/timeouts/{id}` | cancels a pending timeout (timeout id or process id) | `{"cancelled": {...}}` |
/// | `GET /admin/topology/diff` | the live broker against the worker's topology file | `{"matches", "missing", "extra", "changed"}` |
///
/// Errors are `{"error": "..."}`: 400 for bad input (an unknown parameter or body field, a bad filter,
/// state or limit; nothing is changed), 401 without the right token, 404 for an unknown route, queue,
/// message, process or timeout, 405 for a method the route does not take (with `Allow`), 409 for an
/// operation that does not apply (retrying a process that needs no retry), 503 when the broker or the store
/// does not answer.
public struct AdminAPI: Sendable {
    /// The path every admin route starts with.
    public static let prefix = "/admin"
    /// The shortest token accepted.
    public static let minimumTokenLength = 16
    /// The dead letters a list returns when no `limit` is given.
    public static let defaultListLimit = 100

    /// Why the admin API cannot be turned on (the token's value is never part of it).
    public struct Refused: Error, Sendable, CustomStringConvertible, Equatable {
        /// What is wrong.
        public var description: String
    }

    private let token: [UInt8]
    private let broker: AMQPConfiguration?
    private let store: (any EventStore)?
    private let topology: Topology
    private let managementURL: URL?
    private let retries: [ProcessInspection.SagaRetry]
    private let logger: Logger

    /// The admin API of a worker.
    /// - Parameters:
    ///   - token: the bearer token, at least ``minimumTokenLength`` characters.
    ///   - broker: the broker the dead-letter routes connect to (one connection per request); nil answers 503.
    ///   - store: the event store of the process and timeout routes; nil answers 503.
    ///   - topology: the worker's topology: the default dead-letter queue and what the diff compares with.
    ///   - managementURL: the RabbitMQ management API (`http://<broker host>:15672` by default).
    ///   - retries: the sagas a process retry can run on.
    ///   - logger: where each request is logged (method, path, status; never a header).
    /// - Throws: ``Refused`` for an empty or short token.
    public init(token: String, broker: AMQPConfiguration?, store: (any EventStore)?, topology: Topology, managementURL: URL? = nil,
                retries: [ProcessInspection.SagaRetry] = [], logger: Logger) throws(Refused) {
        let trimmed = token.trimmingCharacters(in: .whitespacesAndNewlines)
        guard trimmed.count >= Self.minimumTokenLength else {
            throw Refused(description: "the admin token must be at least \(Self.minimumTokenLength) characters (it has \(trimmed.count))")
        }
        self.token = Array(trimmed.utf8)
        self.broker = broker
        self.store = store
        self.topology = topology
        self.managementURL = managementURL
        self.retries = retries
        self.logger = logger
    }

    /// Answers `request` when its path is under ``prefix``; nil for any other path.
    public func handle(_ request: HTTPRequest) async -> HTTPReply? {
        guard request.path == Self.prefix || request.path.hasPrefix(Self.prefix + "/") else { return nil }
        let reply: HTTPReply
        if !isAuthorized(request) {
            reply = Self.error(401, "missing or wrong bearer token (Authorization: Bearer <token>)", headers: ["WWW-Authenticate": "Bearer"])
        } else {
            do {
                reply = try await route(request)
            } catch {
                reply = Self.reply(for: error)
            }
        }
        logger.info("admin: request", metadata: ["method": "\(request.method)", "path": "\(request.path)", "status": "\(reply.status)"])
        return reply
    }

    // MARK: - Authorization

    /// Whether the request carries the token, compared in time that depends only on the token's length.
    private func isAuthorized(_ request: HTTPRequest) -> Bool {
        guard let header = request.headers["authorization"] else { return false }
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return false }
        return Self.constantTimeEqual(Array(parts[1].trimmingCharacters(in: .whitespaces).utf8), token)
    }

    /// Compares `given` with `expected` touching every byte of `expected` whatever `given` holds.
    public static func constantTimeEqual(_ given: [UInt8], _ expected: [UInt8]) -> Bool {
        var difference: UInt8 = given.count == expected.count ? 0 : 1
        for index in expected.indices {
            let byte = index < given.count ? given[index] : 0
            difference |= byte ^ expected[index]
        }
        return difference == 0
    }

    // MARK: - Routing

    /// A route: a path pattern (`*` matches one segment), the methods it takes.
    private enum Route: CaseIterable {
        case deadLetters, deadLetter, requeue, processes, process, retry, timeouts, timeout, topologyDiff

        var pattern: [String] {
            switch self {
            case .deadLetters: ["dead-letters"]
            case .deadLetter: ["dead-letters", "*"]
            case .requeue: ["dead-letters", "requeue"]
            case .processes: ["processes"]
            case .process: ["processes", "*"]
            case .retry: ["processes", "*", "retry"]
            case .timeouts: ["timeouts"]
            case .timeout: ["timeouts", "*"]
            case .topologyDiff: ["topology", "diff"]
            }
        }

        var methods: [String] {
            switch self {
            case .deadLetters: ["GET", "DELETE"]
            case .deadLetter, .processes, .process, .timeouts, .topologyDiff: ["GET"]
            case .requeue, .retry: ["POST"]
            case .timeout: ["DELETE"]
            }
        }

        /// The segments `*` matched, or nil when `segments` is not this route.
        func match(_ segments: [String]) -> [String]? {
            guard segments.count == pattern.count else { return nil }
            var captured: [String] = []
            for (segment, wanted) in zip(segments, pattern) {
                if wanted == "*" { captured.append(segment) } else if segment != wanted { return nil }
            }
            return captured
        }
    }

    private func route(_ request: HTTPRequest) async throws -> HTTPReply {
        // Split before decoding: an id may hold a `/`, sent as `%2F`.
        let encoded = request.encodedPath.hasPrefix(Self.prefix) ? request.encodedPath.dropFirst(Self.prefix.count) : Substring(request.path.dropFirst(Self.prefix.count))
        let segments = encoded.split(separator: "/").map { String($0).removingPercentEncoding ?? String($0) }
        // A literal segment wins over `*`: POST /dead-letters/requeue is the requeue, GET /dead-letters/x a dead letter.
        let matches = Route.allCases.compactMap { route in route.match(segments).map { (route, $0) } }
        guard !matches.isEmpty else { throw AdminError(404, "no admin route \(request.path)") }
        guard let match = matches.first(where: { $0.0.methods.contains(request.method) }) else {
            let allowed = Array(Set(matches.flatMap { $0.0.methods })).sorted()
            throw AdminError(405, "\(request.method) is not allowed on \(request.path): use \(allowed.joined(separator: ", "))",
                             headers: ["Allow": allowed.joined(separator: ", ")])
        }
        let (route, ids) = match
        let input = AdminInput(request)
        switch (route, request.method) {
        case (.deadLetters, "GET"):
            try input.onlyQuery(["queue", "limit", "filter"])
            let limit = try input.positiveInteger("limit") ?? Self.defaultListLimit
            let filter = try DeadLetterFilter(parsing: input.query["filter"] ?? "")
            let queue = deadLetterQueueName(input)
            let letters = try await withBroker { try await DeadLetterQueue(connection: $0, queue: queue).list(limit: limit, filter: filter) }
            return try Self.json(200, DeadLetterList(queue: queue, deadLetters: letters))
        case (.deadLetters, _):
            try input.onlyQuery(["queue", "confirm"])
            let queue = deadLetterQueueName(input)
            let confirmed = input.query["confirm"] == "yes"
            let purged = try await withBroker { connection in
                let deadLetters = DeadLetterQueue(connection: connection, queue: queue)
                guard confirmed else {
                    let count = try await deadLetters.count()
                    throw AdminError(400, "this deletes \(count) dead letter(s) from \(queue) for good: send DELETE again with ?confirm=yes")
                }
                return try await deadLetters.purge()
            }
            return try Self.json(200, PurgeReport(queue: queue, purged: purged))
        case (.deadLetter, _):
            try input.onlyQuery(["queue"])
            let queue = deadLetterQueueName(input)
            let letter = try await withBroker { try await DeadLetterQueue(connection: $0, queue: queue).show(messageID: ids[0]) }
            return try Self.json(200, letter)
        case (.requeue, _):
            try input.onlyQuery(["queue"])
            let body = try input.object(allowed: ["filter", "to", "limit", "dryRun"])
            let request = DeadLetterRequeueRequest(
                filter: try DeadLetterFilter(parsing: try body.string("filter") ?? ""), target: try body.string("to"),
                dryRun: try body.bool("dryRun") ?? false, limit: try body.positiveInteger("limit"))
            if let target = request.target, target.isEmpty { throw AdminError(400, "\"to\" must name a queue") }
            let queue = deadLetterQueueName(input)
            let report = try await withBroker { try await DeadLetterQueue(connection: $0, queue: queue).requeue(request) }
            return try Self.json(200, report)
        case (.processes, _):
            try input.onlyQuery(["state", "type"])
            let state = try input.query["state"].map { try ProcessInspection.stateFilter(parsing: $0) }
            let type = input.query["type"]
            let rows = try await withStore { try await $0.list(state: state, processType: type) }
            return try Self.json(200, ["processes": rows])
        case (.process, _):
            try input.onlyQuery([])
            let detail = try await withStore { try await $0.show(ids[0]) }
            return try Self.json(200, detail)
        case (.retry, _):
            try input.onlyQuery([])
            let body = try input.object(allowed: ["by"])
            let by = try body.string("by") ?? "admin-api"
            guard !by.isEmpty else { throw AdminError(400, "\"by\" must not be empty") }
            let report = try await withStore { try await $0.retry(ids[0], by: by) }
            return try Self.json(200, report)
        case (.timeouts, _):
            try input.onlyQuery([])
            let timeouts = try await withStore { try await $0.pendingTimeouts() }
            return try Self.json(200, ["timeouts": timeouts])
        case (.timeout, _):
            try input.onlyQuery([])
            let cancelled = try await withStore { try await $0.cancelTimeout(ids[0]) }
            return try Self.json(200, ["cancelled": cancelled])
        case (.topologyDiff, _):
            try input.onlyQuery([])
            guard let broker else { throw AdminError(503, "this worker has no broker configured") }
            let difference = try await BrokerDefinitions.fetch(configuration: broker, managementURL: managementURL).difference(from: topology)
            return try Self.json(200, TopologyDiffReport(difference))
        }
    }

    private func deadLetterQueueName(_ input: AdminInput) -> String {
        input.query["queue"].flatMap { $0.isEmpty ? nil : $0 } ?? topology.fleet.deadLetterQueue
    }

    /// Runs `body` on a connection of its own to the broker (no recovery, a short connect timeout), closed after.
    private func withBroker<T>(_ body: (AMQPConnection) async throws -> T) async throws -> T {
        guard var configuration = broker else { throw AdminError(503, "this worker has no broker configured") }
        configuration.recovery = nil
        configuration.connectTimeout = .seconds(5)
        let connection: AMQPConnection
        do {
            var quiet = logger
            quiet.logLevel = .warning
            connection = try await AMQPConnection.connect(configuration, logger: quiet)
        } catch {
            throw OperationsError(.unreachable, "cannot reach the broker at \(configuration): \(error)")
        }
        do {
            let value = try await body(connection)
            await connection.close()
            return value
        } catch {
            await connection.close()
            throw error
        }
    }

    /// Runs `body` on an inspection of the store; a failure of the store itself becomes 503.
    private func withStore<T>(_ body: (ProcessInspection) async throws -> T) async throws -> T {
        guard let store else { throw AdminError(503, "this worker has no event store configured") }
        do {
            return try await body(ProcessInspection(store: store, retries: retries))
        } catch let error as OperationsError {
            throw error
        } catch let error as AdminError {
            throw error
        } catch {
            throw OperationsError(.unreachable, "the event store failed: \(error)")
        }
    }

    // MARK: - Replies

    private static func reply(for error: any Error) -> HTTPReply {
        switch error {
        case let error as AdminError:
            return Self.error(error.status, error.message, headers: error.headers)
        case let error as OperationsError:
            let status = switch error.code {
            case .invalidArgument, .positionPastEnd: 400
            case .notFound: 404
            case .notApplicable, .checkpointMismatch: 409
            case .publishFailed: 502
            default: 503
            }
            return Self.error(status, error.message)
        case let error as AMQPError:
            return Self.error(503, "the broker failed: \(error)")
        default:
            return Self.error(500, "internal error: \(error)")
        }
    }

    private static func error(_ status: Int, _ message: String, headers: [String: String] = [:]) -> HTTPReply {
        var reply = (try? json(status, ["error": message])) ?? .text(status, message + "\n")
        reply.headers = headers
        return reply
    }

    private static func json<T: Encodable>(_ status: Int, _ value: T) throws -> HTTPReply {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return .json(status, try encoder.encode(value))
    }
}

/// An admin request refused with a status and a message for the caller.
struct AdminError: Error {
    var status: Int
    var message: String
    var headers: [String: String]

    init(_ status: Int, _ message: String, headers: [String: String] = [:]) {
        self.status = status
        self.message = message
        self.headers = headers
    }
}

/// The query and body of an admin request, checked strictly: an unknown name is refused, not ignored.
struct AdminInput {
    let query: [String: String]
    let body: [UInt8]

    init(_ request: HTTPRequest) {
        query = request.query
        body = request.body
    }

    /// Refuses any query parameter not in `allowed`.
    func onlyQuery(_ allowed: Set<String>) throws(AdminError) {
        let unknown = Set(query.keys).subtracting(allowed).sorted()
        guard unknown.isEmpty else {
            let known = allowed.isEmpty ? "this route takes none" : "known: \(allowed.sorted().joined(separator: ", "))"
            throw AdminError(400, "unknown query parameter(s) \(unknown.joined(separator: ", ")) (\(known))")
        }
    }

    /// The query parameter `name` as a whole number of at least 1.
    func positiveInteger(_ name: String) throws(AdminError) -> Int? {
        guard let text = query[name] else { return nil }
        guard let number = Int(text), number >= 1 else { throw AdminError(400, "\(name) must be a whole number of at least 1, not \"\(text.prefix(40))\"") }
        return number
    }

    /// The body as a JSON object with no key outside `allowed`; an empty body is an empty object.
    func object(allowed: Set<String>) throws(AdminError) -> AdminBody {
        guard !body.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) else { return AdminBody(fields: [:]) }
        guard case .object(let fields)? = try? JSONDecoder().decode(JSONValue.self, from: Data(body)) else {
            throw AdminError(400, "the body must be a JSON object")
        }
        let unknown = Set(fields.keys).subtracting(allowed).sorted()
        guard unknown.isEmpty else {
            throw AdminError(400, "unknown field(s) \(unknown.joined(separator: ", ")) (known: \(allowed.sorted().joined(separator: ", ")))")
        }
        return AdminBody(fields: fields)
    }
}

/// A JSON value, with its type kept exactly (a boolean is not a number).
enum JSONValue: Decodable {
    case null, bool(Bool), number(Double), string(String), array([JSONValue]), object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }
}

/// The fields of a JSON body, read with their expected types; a null field counts as absent.
struct AdminBody {
    let fields: [String: JSONValue]

    func string(_ name: String) throws(AdminError) -> String? {
        switch fields[name] {
        case nil, .null?: return nil
        case .string(let text)?: return text
        default: throw AdminError(400, "\"\(name)\" must be a string")
        }
    }

    func bool(_ name: String) throws(AdminError) -> Bool? {
        switch fields[name] {
        case nil, .null?: return nil
        case .bool(let value)?: return value
        default: throw AdminError(400, "\"\(name)\" must be true or false")
        }
    }

    func positiveInteger(_ name: String) throws(AdminError) -> Int? {
        switch fields[name] {
        case nil, .null?: return nil
        case .number(let number)? where number >= 1 && number < 1e15 && number.rounded() == number: return Int(number)
        default: throw AdminError(400, "\"\(name)\" must be a whole number of at least 1")
        }
    }
}

/// The answer of `GET /admin/dead-letters`.
struct DeadLetterList: Encodable {
    var queue: String
    var deadLetters: [DeadLetter]
}

/// The answer of `DELETE /admin/dead-letters`.
struct PurgeReport: Encodable {
    var queue: String
    var purged: Int
}

/// The answer of `GET /admin/topology/diff`.
struct TopologyDiffReport: Encodable {
    var matches: Bool
    var missing: [String]
    var extra: [String]
    var changed: [String]

    init(_ difference: TopologyDifference) {
        matches = difference.isEmpty
        missing = difference.missing
        extra = difference.extra
        changed = difference.changed
    }
}
