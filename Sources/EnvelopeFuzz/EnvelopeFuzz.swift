import AMQP
import EventCore
import Fleet
import Foundation
import OrderFulfillment
import Processes

/// One fuzz input through what a worker does with a message before the store: the envelope decoder, then the
/// order router's payload decoding; or, for inputs whose first byte says so, the topology loader.
///
/// The first byte chooses: bit 7 the topology loader, bit 0 the foreign route (else the fleet's own), bits 1-3
/// the type property, bits 4-6 a header variant. The rest is the body (or the topology file).
enum EnvelopeFuzz {
    static let ownRoute = Route(queue: "fleet.orders", handler: "order-fulfillment")
    static let foreignRoute = Route(queue: "fleet.legacy-payments", handler: "order-fulfillment", foreign: [
        ForeignMapping(routingKey: "settlement.completed", eventType: "PaymentConfirmed", correlationPointer: "/order_id",
                       messageIDPointer: "/settlement_id", fields: ["order_id": "/order_id", "payment_id": "/settlement_id"]),
        ForeignMapping(header: .init(name: "x-kind", value: "declined"), eventType: "PaymentFailed", correlationPointer: "/order/id",
                       fields: ["order_id": "/order/id", "reason": "/decline_reason"]),
    ])
    static let types: [String?] = [nil, "OrderPlaced", "PaymentConfirmed", "PaymentFailed", "ShipmentDispatched", "CustomerNotified", "Unknown", ""]
    static let headers: [AMQPTable?] = [
        nil, ["x-kind": "declined"], [Envelope.Header.attempt: .int64(.max)], [Envelope.Header.dueAt: "soon"],
        [Envelope.Header.dueAt: .int64(.min)], [Envelope.Header.causationID: .bytes([0xFF])], ["x-death": .array([.table([:])])],
        [Envelope.Header.attempt: .int32(2), Envelope.Header.streamVersion: .int64(3)],
    ]

    /// Runs one input; returns normally whatever the input is (a crash or a hang is the finding).
    static func run(_ data: Data) {
        guard let selector = data.first else { return }
        let body = data.dropFirst()
        if selector & 0x80 != 0 {
            _ = try? Topology.decode(Data(body), source: "fuzz")
            return
        }
        var properties = AMQPProperties.persistent
        properties.contentType = "application/json"
        properties.type = types[Int(selector >> 1) & 7]
        properties.messageID = "fuzz"
        properties.correlationID = selector & 0x40 != 0 ? "order-1" : nil
        properties.headers = headers[Int(selector >> 4) & 7]
        let foreign = selector & 1 != 0
        let decoder = EnvelopeDecoder(route: foreign ? foreignRoute : ownRoute)
        guard let envelope = try? decoder.decode(body: Data(body), properties: properties, routingKey: foreign ? "settlement.completed" : "payment.confirmed",
                                                 queue: decoder.route.queue) else { return }
        let incoming = IncomingEvent(eventType: envelope.eventType, payload: envelope.body, messageID: envelope.messageID, receivedAt: Date(),
                                     metadata: EventMetadata(correlationID: envelope.correlationID))
        _ = try? OrderFulfillmentRouter().route(incoming)
    }
}

#if FUZZING
/// libFuzzer's entry point.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    EnvelopeFuzz.run(start.map { Data(bytes: $0, count: count) } ?? Data())
    return 0
}

/// libFuzzer's driver, for programs with a `main` of their own.
@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                     _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// The program's `main`: SwiftPM links every executable with `main` aliased to `<module>_main`, so libFuzzer's
/// own `main` is not the one that runs; this one hands over to libFuzzer's driver.
@_cdecl("EnvelopeFuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    var count = argc
    var arguments = argv
    return runFuzzerDriver(&count, &arguments, fuzzOneInput)
}
#else
/// Without libFuzzer: runs the files named on the command line through the same code, to replay a finding
/// (`.build/debug/EnvelopeFuzz crash-1234`) in a debugger.
@main
struct EnvelopeReplay {
    static func main() throws {
        for path in CommandLine.arguments.dropFirst() {
            EnvelopeFuzz.run(try Data(contentsOf: URL(fileURLWithPath: path)))
            print("\(path): ok")
        }
    }
}
#endif
