import AMQP
import FleetTestSupport
import Foundation
import Testing

@Suite("AMQP URLs and configuration")
struct ConfigurationTests {
    @Test func parsesAFullURL() throws {
        let configuration = try AMQPConfiguration(url: "amqp://alice:s%40cret@broker.example:5673/orders?heartbeat=5&connection_name=worker-1&channel_max=64")
        #expect(configuration.host == "broker.example")
        #expect(configuration.port == 5673)
        #expect(configuration.user == "alice")
        #expect(configuration.password == "s@cret")
        #expect(configuration.virtualHost == "orders")
        #expect(configuration.heartbeat == 5)
        #expect(configuration.connectionName == "worker-1")
        #expect(configuration.channelMax == 64)
        #expect(configuration.tls == nil)
    }

    @Test func defaultsFollowTheScheme() throws {
        let plain = try AMQPConfiguration(url: "amqp://localhost")
        #expect(plain.port == 5672)
        #expect(plain.virtualHost == "/")
        #expect(plain.user == "guest")
        let secure = try AMQPConfiguration(url: "amqps://localhost/%2F?cacertfile=/etc/ca.pem")
        #expect(secure.port == 5671)
        #expect(secure.virtualHost == "/")
        #expect(secure.tls?.caCertificateFile == "/etc/ca.pem")
        #expect(secure.tls?.verifyPeer == true)
        #expect(secure.tls?.verifyHostname == true)
    }

    @Test func verifyNoneTurnsVerificationOff() throws {
        let configuration = try AMQPConfiguration(url: "amqps://localhost?verify=verify_none")
        #expect(configuration.tls?.verifyPeer == false)
        #expect(configuration.tls?.verifyHostname == false)
    }

    @Test(arguments: [
        "http://localhost", "amqp://localhost?heartbeat=soon", "amqp://localhost?frobnicate=1",
        "amqp://localhost:70000", "amqp://localhost?cacertfile=/ca.pem", "amqp://localhost/a/b",
    ])
    func rejectsMalformedURLs(url: String) {
        #expect(throws: AMQPError.self) { try AMQPConfiguration(url: url) }
        do {
            _ = try AMQPConfiguration(url: url)
        } catch {
            #expect(error.code == .invalidURL)
        }
    }

    @Test func descriptionHidesThePassword() throws {
        let configuration = try AMQPConfiguration(url: "amqp://alice:topsecret@localhost/")
        #expect(!configuration.description.contains("topsecret"))
        #expect(configuration.description.contains("alice@localhost"))
    }

    @Test func recoveryBackoffDoublesUpToItsMaximum() {
        let policy = AMQPConfiguration.RecoveryPolicy(initialDelay: .milliseconds(100), maximumDelay: .seconds(1))
        #expect(policy.delay(beforeAttempt: 1) == .milliseconds(100))
        #expect(policy.delay(beforeAttempt: 2) == .milliseconds(200))
        #expect(policy.delay(beforeAttempt: 4) == .milliseconds(800))
        #expect(policy.delay(beforeAttempt: 5) == .seconds(1))
        #expect(policy.delay(beforeAttempt: 60) == .seconds(1))
    }

    @Test func errorsSayWhetherARetryCanHelp() {
        #expect(AMQPError(.connectionLost, operation: "x").isRetryable)
        #expect(AMQPError(.messageNacked, operation: "x").isRetryable)
        #expect(!AMQPError(.authenticationFailed, operation: "x").isRetryable)
        #expect(!AMQPError(.preconditionFailed, operation: "x", replyCode: 406).isRetryable)
        #expect(AMQPError(.connectionClosed, operation: "x", replyCode: 320).isRetryable)
    }
}
