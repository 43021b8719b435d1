import Foundation

/// How to reach a RabbitMQ broker and how the connection behaves.
///
/// Build it from an `amqp://` or `amqps://` URL (RabbitMQ's URI specification, with the query parameters
/// `heartbeat`, `connection_timeout`, `channel_max`, `frame_max`, `connection_name`, `cacertfile`, `certfile`,
/// `keyfile`, `verify` = `verify_peer` | `verify_none`, `server_name_indication`), or set the fields directly.
public struct AMQPConfiguration: Sendable, CustomStringConvertible {
    /// TLS settings for an `amqps` connection.
    public struct TLS: Sendable, Equatable {
        /// PEM file of the certificate authorities to trust. Without it the system's default store is used.
        public var caCertificateFile: String?
        /// PEM client certificate, for brokers that require one (with `keyFile`).
        public var certificateFile: String?
        /// PEM private key of the client certificate.
        public var keyFile: String?
        /// Whether the broker's certificate chain must verify. On by default; turn off only for tests.
        public var verifyPeer: Bool
        /// Whether the certificate must name the host connected to. On by default.
        public var verifyHostname: Bool

        /// TLS with peer and host name verification on.
        public init(caCertificateFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil,
                    verifyPeer: Bool = true, verifyHostname: Bool = true) {
            self.caCertificateFile = caCertificateFile
            self.certificateFile = certificateFile
            self.keyFile = keyFile
            self.verifyPeer = verifyPeer
            self.verifyHostname = verifyHostname
        }
    }

    /// Broker host name or address.
    public var host: String = "127.0.0.1"
    /// Broker port; 5672 for `amqp`, 5671 for `amqps` by default.
    public var port: Int = 5672
    /// Virtual host.
    public var virtualHost: String = "/"
    /// User name.
    public var user: String = "guest"
    /// Password. Never printed: `description` and errors omit it.
    public var password: String = "guest"
    /// Heartbeat interval proposed to the broker, in seconds; 0 turns heartbeats off.
    public var heartbeat: Int = 30
    /// The name the broker shows for this connection (management UI, `rabbitmqctl list_connections`).
    public var connectionName: String?
    /// Maximum number of channels proposed; 0 lets the broker decide.
    public var channelMax: Int = 0
    /// Maximum frame size proposed.
    public var frameMax: Int = 131_072
    /// How long opening the socket and the AMQP handshake may take.
    public var connectTimeout: Duration = .seconds(10)
    /// How long a synchronous method (a declare, a consume) may wait for the broker's answer.
    public var rpcTimeout: Duration = .seconds(30)
    /// TLS settings; nil for a plain TCP connection.
    public var tls: TLS?
    /// How a lost connection is recovered; nil means a lost connection stays lost.
    public var recovery: RecoveryPolicy? = RecoveryPolicy()

    /// Reconnection after a lost connection: exponential backoff between attempts, then the recorded
    /// topology is declared again, publishers get fresh confirm channels and consumers resume.
    public struct RecoveryPolicy: Sendable, Equatable {
        /// Delay before the first attempt.
        public var initialDelay: Duration
        /// Upper bound of the delay between attempts.
        public var maximumDelay: Duration
        /// Attempts before giving up; nil for no limit.
        public var maximumAttempts: Int?

        /// A policy starting at `initialDelay`, doubling up to `maximumDelay`.
        public init(initialDelay: Duration = .milliseconds(100), maximumDelay: Duration = .seconds(5),
                    maximumAttempts: Int? = nil) {
            self.initialDelay = initialDelay
            self.maximumDelay = maximumDelay
            self.maximumAttempts = maximumAttempts
        }

        /// The delay before attempt `attempt` (1-based).
        public func delay(beforeAttempt attempt: Int) -> Duration {
            let exponent = min(max(attempt - 1, 0), 30)
            let candidate = initialDelay * (1 << exponent)
            return min(candidate, maximumDelay)
        }
    }

    /// A configuration with the defaults: guest on 127.0.0.1:5672, virtual host `/`.
    public init() {}

    /// Parses an `amqp://` or `amqps://` URL.
    ///
    /// - Throws: ``AMQPError`` with code `.invalidURL` naming the part that is wrong.
    public init(url: String) throws(AMQPError) {
        func invalid(_ why: String) -> AMQPError {
            AMQPError(.invalidURL, operation: "parse URL", detail: why)
        }
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased() else {
            throw invalid("not a URL")
        }
        switch scheme {
        case "amqp": port = 5672
        case "amqps":
            port = 5671
            tls = TLS()
        default:
            throw invalid("scheme must be amqp or amqps, not \(scheme)")
        }
        if let host = components.host, !host.isEmpty {
            self.host = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        }
        if let port = components.port {
            guard (1...65535).contains(port) else { throw invalid("port \(port) out of range") }
            self.port = port
        }
        if let user = components.user { self.user = user.removingPercentEncoding ?? user }
        if let password = components.password { self.password = password.removingPercentEncoding ?? password }
        let path = components.percentEncodedPath
        if path.count > 1 {
            let encoded = String(path.dropFirst())
            guard !encoded.contains("/") else { throw invalid("a virtual host with '/' must be written %2F") }
            virtualHost = encoded.removingPercentEncoding ?? encoded
        }
        for item in components.queryItems ?? [] {
            let value = item.value ?? ""
            func integer() throws(AMQPError) -> Int {
                guard let number = Int(value), number >= 0 else { throw invalid("\(item.name) must be a whole number") }
                return number
            }
            switch item.name {
            case "heartbeat": heartbeat = try integer()
            case "connection_timeout": connectTimeout = .milliseconds(try integer())
            case "channel_max": channelMax = try integer()
            case "frame_max": frameMax = try integer()
            case "connection_name": connectionName = value
            case "cacertfile": tls = (tls ?? TLS()).with { $0.caCertificateFile = value }
            case "certfile": tls = (tls ?? TLS()).with { $0.certificateFile = value }
            case "keyfile": tls = (tls ?? TLS()).with { $0.keyFile = value }
            case "verify":
                guard value == "verify_peer" || value == "verify_none" else {
                    throw invalid("verify must be verify_peer or verify_none")
                }
                let on = value == "verify_peer"
                tls = (tls ?? TLS()).with { $0.verifyPeer = on; $0.verifyHostname = on }
            case "server_name_indication":
                // Host name verification uses the connected host; this client cannot override it.
                guard value == host else { throw invalid("server_name_indication other than the host is unsupported") }
            default:
                throw invalid("unknown option \(item.name)")
            }
        }
        if tls != nil && scheme == "amqp" { throw invalid("TLS options need the amqps scheme") }
    }

    /// The broker's address without credentials, for logs and errors.
    public var description: String {
        let scheme = tls == nil ? "amqp" : "amqps"
        let vhost = virtualHost == "/" ? "%2F" : (virtualHost.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? virtualHost)
        return "\(scheme)://\(user)@\(host):\(port)/\(vhost)"
    }
}

extension AMQPConfiguration.TLS {
    fileprivate func with(_ change: (inout Self) -> Void) -> Self {
        var copy = self
        change(&copy)
        return copy
    }
}
