import EventCore
import Fleet
import Foundation
import OrderFulfillment
import Processes

/// The travel-booking queue's handler: trip requests start the booking saga; providers' capacity
/// announcements stock hotels, flights and cars.
struct TravelMessageHandler: MessageHandler {
    let saga: SagaMessageHandler<TravelBookingSaga>
    let runtime: ProcessRuntime
    let consumer = "travel-booking"

    init(runtime: ProcessRuntime) {
        self.runtime = runtime
        saga = SagaMessageHandler(eventType: TravelCapacityRequest.tripRequested, runner: SagaRunner(runtime: runtime))
    }

    func handle(_ envelope: Envelope) async throws -> HandlerOutcome {
        switch envelope.eventType {
        case TravelCapacityRequest.tripRequested:
            return try await saga.handle(envelope)
        case TravelCapacityRequest.eventType:
            struct Announcement: Decodable {
                var resourceKind: TravelResourceKind
                var resourceID: String
                var units: Int
                enum CodingKeys: String, CodingKey { case resourceKind = "resource_kind", resourceID = "resource_id", units }
            }
            let command: AddTravelCapacity
            do {
                let announcement = try JSONDecoder().decode(Announcement.self, from: envelope.body)
                guard (1...1_000_000).contains(announcement.units) else {
                    throw EnvelopeError(.invalidPayload, "units must be between 1 and 1000000")
                }
                command = try AddTravelCapacity(announcement.resourceKind, id: announcement.resourceID, units: announcement.units)
            } catch let error as EnvelopeError {
                throw error
            } catch {
                throw EnvelopeError(.invalidPayload, "not a capacity announcement: \(String(describing: error).prefix(200))")
            }
            let options = ExecutionOptions(idempotencyKey: try IdempotencyKey(consumer: consumer, messageID: envelope.messageID),
                                           metadata: EventMetadata(correlationID: envelope.correlationID, causationID: envelope.messageID,
                                                                   sourceMessageID: envelope.messageID))
            return HandlerOutcome(try await runtime.execute(command, options: options))
        default:
            throw EnvelopeError(.unknownEventType, "the travel-booking queue does not take \(envelope.eventType.prefix(100))")
        }
    }
}
