import EventCore
import Foundation
import Logging
import NIOPosix
import NIOSSL
import PostgresNIO

/// Reads a `postgres://user:password@host:port/database?sslmode=...&sslrootcert=...` URL into a client
/// configuration.
///
/// `sslmode` takes `disable` (the default), `require` (encrypted, server not verified), `verify-ca` (the
/// chain must verify against `sslrootcert` or the system store) and `verify-full` (also the host name). Errors
/// name the part that is wrong and never contain the password.
public enum PostgresURL {
    /// What a URL says, before it becomes a pool's or a single connection's configuration.
    struct Parts {
        var host: String
        var port: Int
        var user: String
        var password: String?
        var database: String
        var tls: TLSConfiguration?
        var maximumConnections: Int?
    }

    static func parts(_ url: String) throws(EventStoreError) -> Parts {
        func invalid(_ why: String) -> EventStoreError {
            EventStoreError(.invalidConfiguration, "the PostgreSQL URL is invalid: \(why)")
        }
        guard let components = URLComponents(string: url), let scheme = components.scheme,
              scheme == "postgres" || scheme == "postgresql" else {
            throw invalid("it must start with postgres://")
        }
        guard let host = components.host, !host.isEmpty else { throw invalid("it names no host") }
        let user = components.user.map { $0.removingPercentEncoding ?? $0 } ?? "postgres"
        let password = components.password.map { $0.removingPercentEncoding ?? $0 }
        let database = components.path.count > 1 ? String(components.path.dropFirst()) : user
        var sslMode = "disable"
        var rootCertificate: String?
        var maximumConnections: Int?
        for item in components.queryItems ?? [] {
            switch item.name {
            case "sslmode": sslMode = item.value ?? ""
            case "sslrootcert": rootCertificate = item.value
            case "max_connections":
                guard let value = item.value.flatMap(Int.init), value >= 1 else { throw invalid("max_connections must be a positive number") }
                maximumConnections = value
            default: throw invalid("unknown option \(item.name)")
            }
        }
        var tls: TLSConfiguration?
        switch sslMode {
        case "disable": tls = nil
        case "require", "verify-ca", "verify-full":
            var configuration = TLSConfiguration.makeClientConfiguration()
            switch sslMode {
            case "require": configuration.certificateVerification = .none
            case "verify-ca": configuration.certificateVerification = .noHostnameVerification
            default: configuration.certificateVerification = .fullVerification
            }
            if let rootCertificate {
                guard FileManager.default.isReadableFile(atPath: rootCertificate) else {
                    throw invalid("sslrootcert \(rootCertificate) cannot be read")
                }
                configuration.trustRoots = .file(rootCertificate)
            }
            tls = configuration
        default:
            throw invalid("sslmode must be disable, require, verify-ca or verify-full")
        }
        return Parts(host: host, port: components.port ?? 5432, user: user, password: password, database: database,
                     tls: tls, maximumConnections: maximumConnections)
    }

    /// The client configuration for `url`, tuned for an event store (see ``tuneForEventStore(_:)``).
    public static func clientConfiguration(_ url: String) throws(EventStoreError) -> PostgresClient.Configuration {
        let parts = try parts(url)
        var configuration = PostgresClient.Configuration(
            host: parts.host, port: parts.port, username: parts.user, password: parts.password, database: parts.database,
            tls: parts.tls.map { .require($0) } ?? .disable)
        if let maximumConnections = parts.maximumConnections { configuration.options.maximumConnections = maximumConnections }
        tuneForEventStore(&configuration)
        return configuration
    }

    /// One event loop for the clients of event stores: with all of a client's connections on one loop, a
    /// store's ``PostgresEventStore/preferredExecutor`` is the loop every round trip answers on, and a command
    /// runs its reads and append without a switch of threads. (On a shared group of one loop per core, half the
    /// round trips land on the other loop.) Measured with `EventStoreBenchmark`: a tenth to a third less client
    /// CPU per command than on the shared group, the more the more executors.
    public static let eventLoopGroup: MultiThreadedEventLoopGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    /// How many connections a pool tuned by ``tuneForEventStore(_:)`` keeps open at least: a store's appends,
    /// its reads and one more caller at a time, with room for a second group of each.
    public static let connectionsKeptOpen = 4

    /// Settings of a `PostgresClient` that spare an event store work on every round trip.
    ///
    /// The pool arms timers on each connection it takes back (a keep-alive ping, and an idle timeout for a
    /// connection above the minimum) and cancels them on the next lease: at thousands of round trips a second,
    /// a task and a dispatch timer each time, measured at about a fifth of the client's CPU per command. This
    /// keeps ``connectionsKeptOpen`` connections (or the maximum, if lower) open, so the usual round trip arms no
    /// idle timer, and turns the keep-alive ping off: `PostgresEventStore` finds a connection that died itself
    /// (a read runs again on another; an append fails as retryable). Connections above the minimum still close
    /// after the pool's idle timeout.
    public static func tuneForEventStore(_ configuration: inout PostgresClient.Configuration) {
        configuration.options.minimumConnections = min(connectionsKeptOpen, configuration.options.maximumConnections)
        configuration.options.keepAliveBehavior = nil
    }

    /// Opens one connection to the server `url` names and closes it again, so that a wrong address, password
    /// or certificate is reported at once and plainly, where a pool would keep retrying in the background.
    ///
    /// - Throws: ``EventStoreError/Code/storeUnavailable`` naming the host and the cause (never the password);
    ///   ``EventStoreError/Code/invalidConfiguration`` for a URL that cannot be read.
    public static func checkConnection(_ url: String, timeout: Duration = .seconds(15), logger: Logger = Logger(label: "eventcore.postgres")) async throws(EventStoreError) {
        let parts = try parts(url)
        let tls: PostgresConnection.Configuration.TLS
        do {
            tls = try parts.tls.map { .require(try NIOSSLContext(configuration: $0)) } ?? .disable
        } catch {
            throw EventStoreError(.invalidConfiguration, "the PostgreSQL URL's TLS settings cannot be used: \(error)")
        }
        let configuration = PostgresConnection.Configuration(
            host: parts.host, port: parts.port, username: parts.user, password: parts.password, database: parts.database, tls: tls)
        let place = "PostgreSQL at \(parts.host):\(parts.port)"
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    let connection = try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger)
                    try await connection.close()
                }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    throw EventStoreError(.storeUnavailable, "\(place) did not answer within \(timeout)")
                }
                try await group.next()
                group.cancelAll()
            }
        } catch let error as EventStoreError {
            throw error
        } catch {
            throw EventStoreError(.storeUnavailable, "cannot connect to \(place): \(describe(error))")
        }
    }

    /// The cause of a failed connection in a few words, without anything from the URL's credentials.
    static func describe(_ error: any Error) -> String {
        guard let error = error as? PSQLError else { return "\(type(of: error))" }
        if let message = error.serverInfo?[.message] {
            return "the server refused: \(message)"
        }
        let underlying = error.underlying.map { String(describing: $0) } ?? ""
        if underlying.contains("CERTIFICATE_VERIFY_FAILED") || underlying.contains("handshakeFailed") {
            return "the TLS handshake failed (the server's certificate does not verify against the trusted roots)"
        }
        if underlying.contains("connect") || underlying.contains("Connection refused") {
            return "the connection was refused or could not be made"
        }
        switch error.code {
        case .sslUnsupported: return "the server does not offer TLS"
        case .connectionError: return "the connection failed"
        default: return "\(error.code)"
        }
    }
}
