# Send a flask-chat message from Ruby (e.g. Rails), instead of Juggernaut.publish.
#
#   FLASK_CHAT_URL=http://chat.internal:8000 FLASK_CHAT_TOKEN=secret \
#     ruby send_message.rb SENDER_ID TO TEXT          # TO: "2_User" or "5_Group"
#
# flask-chat answers 201 with the stored message (JSON), or 4xx with
# {"error": code, "message": text}. Only the standard library is used.
require "net/http"
require "json"
require "uri"

def flask_chat_send(sender_id, to, text)
  base = ENV.fetch("FLASK_CHAT_URL", "http://127.0.0.1:5000")
  uri = URI.join(base, "/chats/api/messages")
  request = Net::HTTP::Post.new(uri)
  request["Authorization"] = "Bearer #{ENV.fetch('FLASK_CHAT_TOKEN')}"
  request["Content-Type"] = "application/json"
  request.body = JSON.generate(sender_id: sender_id, to: to, message_text: text)
  response = Net::HTTP.start(uri.host, uri.port, use_ssl: uri.scheme == "https") do |http|
    http.request(request)
  end
  [response.code.to_i, JSON.parse(response.body)]
end

if __FILE__ == $PROGRAM_NAME
  status, body = flask_chat_send(Integer(ARGV[0]), ARGV[1], ARGV[2])
  puts JSON.generate("status" => status, "body" => body)
  exit(status == 201 ? 0 : 1)
end
