import EventCore
import Foundation
import NIOSSL
import PostgresNIO

/// Reads a `postgres://user:password@host:port/database?sslmode=...&sslrootcert=...` URL into a client
/// configuration.
///
/// `sslmode` takes `disable` (the default), `require` (encrypted, server not verified), `verify-ca` (the
/// chain must verify against `sslrootcert` or the system store) and `verify-full` (also the host name). Errors
/// name the part that is wrong and never contain the password.
public enum PostgresURL {
    /// The client configuration for `url`.
    public static func clientConfiguration(_ url: String) throws(EventStoreError) -> PostgresClient.Configuration {
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
        let tls: PostgresClient.Configuration.TLS
        switch sslMode {
        case "disable": tls = .disable
        case "require", "verify-ca", "verify-full":
            var configuration = TLSConfiguration.makeClientConfiguration()
            switch sslMode {
            case "require": configuration.certificateVerification = .none
            case "verify-ca": configuration.certificateVerification = .noHostnameVerification
            default: configuration.certificateVerification = .fullVerification
            }
            if let rootCertificate { configuration.trustRoots = .file(rootCertificate) }
            tls = .require(configuration)
        default:
            throw invalid("sslmode must be disable, require, verify-ca or verify-full")
        }
        var configuration = PostgresClient.Configuration(
            host: host, port: components.port ?? 5432, username: user, password: password, database: database, tls: tls)
        if let maximumConnections { configuration.options.maximumConnections = maximumConnections }
        return configuration
    }
}
