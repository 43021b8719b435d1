import Foundation

/// Everything a worker needs to know, with defaults for a laptop.
///
/// The executable reads it from the environment (``init(environment:)``); a `*_FILE` variant of a secret's key
/// names a file holding the value (for container secrets). Every key is listed in ``keys`` and documented in
/// the README.
public struct WorkerConfiguration: Sendable, Equatable {
    /// The broker URL. Secret: it may hold a password.
    public var amqpURL: String = "amqp://guest:guest@127.0.0.1:5672/"
    /// The event store: a SQLite file path (`fleet.sqlite`, `sqlite:///var/lib/fleet/fleet.sqlite`) or a
    /// `postgres://` URL. Secret: it may hold a password.
    public var storeURL: String = "fleet.sqlite"
    /// The topology file.
    public var topologyPath: String = "topology.json"
    /// Messages handled at once by this worker. A message mostly waits (for the store's group commit, for the
    /// broker's confirms), so many at once keep two cores busy: 128 gave 4,800 process events/s on PostgreSQL
    /// where 32 gave 3,900 (`fleet bench`).
    public var concurrency: Int = 128
    /// Unacknowledged messages the broker may send ahead, per queue.
    public var prefetch: Int = 256
    /// Messages that arrived shortly before their due time (timeouts, retries) this worker may hold until they
    /// are due, on top of `prefetch` for the timeouts queue. See ``DelayTiming``.
    public var holdCapacity: Int = 2048
    /// MiB of recently used streams kept in memory, so a command on a process reads only the events appended
    /// since this worker last saw it (every command still reads from the store); 0 keeps none.
    public var streamCacheMiB: Int = 16
    /// When cached streams are checked against the store: `append` (a stream no other worker touched since its
    /// last check is not read again; the append's expected versions check it, and a conflict sends the command
    /// back to a fresh read) or `read` (every command reads what is new). See `StreamCache`.
    public var streamCacheVerify: String = "append"
    /// Address the HTTP endpoint (metrics, health, admin) listens on.
    public var httpHost: String = "127.0.0.1"
    /// Port of the HTTP endpoint; 0 turns it off.
    public var httpPort: Int = 9090
    /// Token protecting the admin API; nil keeps the admin API off. Secret.
    public var adminToken: String?
    /// This worker's name in dead-letter headers, logs and metrics.
    public var workerID: String = WorkerConfiguration.defaultWorkerID
    /// How long a stopping worker may take to finish the messages in hand.
    public var shutdownGraceSeconds: Int = 25
    /// How long handling one message (the handler and its publications) may take before the worker gives up on
    /// it and returns it to the broker for redelivery; 0 waits for ever.
    public var handlerTimeoutSeconds: Int = 60
    /// After this many seconds without a message, the worker gives back what it keeps for speed (see
    /// ``Worker``'s `whenIdle`: the stream cache, and the allocator's free memory); 0 never does.
    public var idleReleaseSeconds: Int = 30
    /// Bodies larger than this are dead-lettered unread.
    public var maximumBodyBytes: Int = 1 << 20
    /// Log level: trace, debug, info, notice, warning, error, critical.
    public var logLevel: String = "info"

    /// The defaults.
    public init() {}

    /// A key of the configuration's environment.
    public struct Key: Sendable, Hashable {
        /// The variable's name.
        public let name: String
        /// Whether the value is a secret (never logged; may come from `<name>_FILE`).
        public let isSecret: Bool
        /// What it sets.
        public let summary: String
    }

    /// Every environment key a worker reads.
    public static let keys: [Key] = [
        Key(name: "FLEET_AMQP_URL", isSecret: true, summary: "broker URL (amqp:// or amqps://)"),
        Key(name: "FLEET_STORE_URL", isSecret: true, summary: "event store: SQLite path or postgres:// URL"),
        Key(name: "FLEET_TOPOLOGY", isSecret: false, summary: "path of topology.json"),
        Key(name: "FLEET_CONCURRENCY", isSecret: false, summary: "messages handled at once"),
        Key(name: "FLEET_PREFETCH", isSecret: false, summary: "broker prefetch per queue"),
        Key(name: "FLEET_HOLD_CAPACITY", isSecret: false, summary: "timeouts and retries held until their due time"),
        Key(name: "FLEET_STREAM_CACHE_MIB", isSecret: false, summary: "MiB of recently used streams kept in memory (0 = none)"),
        Key(name: "FLEET_STREAM_CACHE_VERIFY", isSecret: false, summary: "when cached streams are checked: append or read"),
        Key(name: "FLEET_HTTP_HOST", isSecret: false, summary: "HTTP listen address"),
        Key(name: "FLEET_HTTP_PORT", isSecret: false, summary: "HTTP port for /metrics, /health/*, /admin (0 = off)"),
        Key(name: "FLEET_ADMIN_TOKEN", isSecret: true, summary: "bearer token of the admin API (unset = admin API off)"),
        Key(name: "FLEET_WORKER_ID", isSecret: false, summary: "this worker's name"),
        Key(name: "FLEET_SHUTDOWN_GRACE_SECONDS", isSecret: false, summary: "time to finish in-flight messages on SIGTERM"),
        Key(name: "FLEET_HANDLER_TIMEOUT_SECONDS", isSecret: false, summary: "time one message may take before it is returned for redelivery (0: no limit)"),
        Key(name: "FLEET_IDLE_RELEASE_SECONDS", isSecret: false, summary: "seconds without a message after which the stream cache and free memory are given back (0 = never)"),
        Key(name: "FLEET_MAX_BODY_BYTES", isSecret: false, summary: "largest message body read"),
        Key(name: "FLEET_LOG_LEVEL", isSecret: false, summary: "log level"),
    ]

    /// A configuration error: a key with a value that cannot be used.
    public struct Invalid: Error, Sendable, CustomStringConvertible, Equatable {
        /// The key.
        public var key: String
        /// What is wrong (never the value of a secret).
        public var problem: String
        public var description: String { "\(key): \(problem)" }
    }

    /// Reads the configuration from environment variables; unset keys keep their defaults.
    ///
    /// - Throws: ``Invalid`` naming the key, without echoing secret values.
    public init(environment: [String: String]) throws(Invalid) {
        func value(_ name: String) throws(Invalid) -> String? {
            if let direct = environment[name], !direct.isEmpty { return direct }
            guard let path = environment["\(name)_FILE"], !path.isEmpty else { return nil }
            guard let contents = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw Invalid(key: "\(name)_FILE", problem: "cannot read \(path)")
            }
            return contents.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        func integer(_ name: String, _ range: ClosedRange<Int>) throws(Invalid) -> Int? {
            guard let text = try value(name) else { return nil }
            guard let number = Int(text), range.contains(number) else {
                throw Invalid(key: name, problem: "must be a whole number in \(range.lowerBound)...\(range.upperBound), not \(text.prefix(40))")
            }
            return number
        }
        if let url = try value("FLEET_AMQP_URL") { amqpURL = url }
        if let url = try value("FLEET_STORE_URL") { storeURL = url }
        if let path = try value("FLEET_TOPOLOGY") { topologyPath = path }
        if let number = try integer("FLEET_CONCURRENCY", 1...4096) { concurrency = number }
        if let number = try integer("FLEET_PREFETCH", 1...65535) { prefetch = number }
        if let number = try integer("FLEET_HOLD_CAPACITY", 0...60_000) { holdCapacity = number }
        if let number = try integer("FLEET_STREAM_CACHE_MIB", 0...65_536) { streamCacheMiB = number }
        if let verify = try value("FLEET_STREAM_CACHE_VERIFY") {
            guard ["append", "read"].contains(verify) else {
                throw Invalid(key: "FLEET_STREAM_CACHE_VERIFY", problem: "must be append or read, not \(verify.prefix(20))")
            }
            streamCacheVerify = verify
        }
        if let host = try value("FLEET_HTTP_HOST") { httpHost = host }
        if let number = try integer("FLEET_HTTP_PORT", 0...65535) { httpPort = number }
        if let token = try value("FLEET_ADMIN_TOKEN") {
            let fromFile = environment["FLEET_ADMIN_TOKEN"]?.isEmpty ?? true
            try Self.checkAdminToken(token, key: fromFile ? "FLEET_ADMIN_TOKEN_FILE" : "FLEET_ADMIN_TOKEN")
            adminToken = token
        }
        if let id = try value("FLEET_WORKER_ID") { workerID = id }
        if let number = try integer("FLEET_SHUTDOWN_GRACE_SECONDS", 0...3600) { shutdownGraceSeconds = number }
        if let number = try integer("FLEET_HANDLER_TIMEOUT_SECONDS", 0...86_400) { handlerTimeoutSeconds = number }
        if let number = try integer("FLEET_IDLE_RELEASE_SECONDS", 0...86_400) { idleReleaseSeconds = number }
        if let number = try integer("FLEET_MAX_BODY_BYTES", 1...(64 << 20)) { maximumBodyBytes = number }
        if let level = try value("FLEET_LOG_LEVEL") {
            guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(level) else {
                throw Invalid(key: "FLEET_LOG_LEVEL", problem: "unknown level \(level.prefix(20))")
            }
            logLevel = level
        }
    }

    /// Turns the admin API on with the token held in the file at `path` (`--admin-token-file`).
    /// - Throws: ``Invalid`` when the file cannot be read or holds no usable token (its contents never shown).
    public mutating func readAdminToken(fromFile path: String) throws(Invalid) {
        guard let contents = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw Invalid(key: "--admin-token-file", problem: "cannot read \(path)")
        }
        let token = contents.trimmingCharacters(in: .whitespacesAndNewlines)
        try Self.checkAdminToken(token, key: "--admin-token-file")
        adminToken = token
    }

    /// Checks that the admin API can be served as configured: with a token when `required` (`--admin`), and
    /// with the HTTP endpoint on when there is a token.
    /// - Throws: ``Invalid`` naming what to set.
    public func validateAdminAPI(required: Bool) throws(Invalid) {
        if required && adminToken == nil {
            throw Invalid(key: "--admin", problem: "the admin API needs a token: set FLEET_ADMIN_TOKEN or FLEET_ADMIN_TOKEN_FILE, or pass --admin-token-file")
        }
        if adminToken != nil && httpPort == 0 {
            throw Invalid(key: "FLEET_HTTP_PORT", problem: "the admin API is served by the HTTP endpoint, which port 0 turns off")
        }
    }

    /// Refuses an empty or short token, saying which setting holds it, never its value.
    private static func checkAdminToken(_ token: String, key: String) throws(Invalid) {
        if token.isEmpty { throw Invalid(key: key, problem: "the admin token is empty: the admin API needs a token") }
        if token.count < 16 { throw Invalid(key: key, problem: "the admin token must be at least 16 characters") }
    }

    /// The host name and process id.
    public static var defaultWorkerID: String {
        "\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)"
    }
}
